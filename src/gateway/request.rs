//! What an HTTP request asks the gateway for: `/ipfs/{cid}[/{path}]`, and in which
//! form (the `format` query parameter first, then `Accept`, as the gateway specs say).

use cid::Cid;
use hyper::Uri;
use percent_encoding::percent_decode_str;

/// A CID's content, as IPFS clients verify it or as a browser shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One block's bytes (`application/vnd.ipld.raw`).
    Raw,
    /// A CARv1 stream (`application/vnd.ipld.car`).
    Car,
    /// The file's bytes or a directory listing.
    Plain,
}

/// How much of the DAG at the end of the path a CAR carries (`dag-scope`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Block,
    /// A whole file, or a directory's own blocks (enough to list it).
    Entity,
    All,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Block => "block",
            Scope::Entity => "entity",
            Scope::All => "all",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub root: Cid,
    /// Path components after the CID, percent-decoded.
    pub path: Vec<String>,
    pub format: Format,
    pub scope: Scope,
    /// `?filename=`: the name for Content-Disposition.
    pub filename: Option<String>,
    /// `?download=true`: a browser should save, not show.
    pub download: bool,
    /// Whether the URL path ends in `/` (a directory listing's links are relative).
    pub slash: bool,
}

/// Why a request cannot be served; the HTTP status and a line for the body.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

pub fn parse(uri: &Uri, accept: Option<&str>) -> Result<Wanted, Refusal> {
    let raw_path = uri.path();
    if raw_path.starts_with("/ipns/") {
        return Err(refuse(501, "this gateway serves /ipfs/ paths only"));
    }
    let Some(rest) = raw_path.strip_prefix("/ipfs/") else {
        return Err(refuse(404, "not found: paths start with /ipfs/CID"));
    };
    let mut parts = rest.split('/');
    let cid_text = parts.next().unwrap_or_default();
    let root: Cid = cid_text
        .parse()
        .map_err(|e| refuse(400, format!("{cid_text}: not a CID ({e})")))?;
    let mut path = Vec::new();
    for part in parts.filter(|p| !p.is_empty()) {
        let name = percent_decode_str(part)
            .decode_utf8()
            .map_err(|_| refuse(400, "the path is not UTF-8"))?
            .into_owned();
        if name == "." || name == ".." || name.contains('/') {
            return Err(refuse(
                400,
                format!("{name:?} is not a name in a directory"),
            ));
        }
        path.push(name);
    }

    let mut format = None;
    let mut scope = Scope::All;
    let mut filename = None;
    let mut download = false;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match &*key {
            "format" => {
                format = Some(match &*value {
                    "raw" => Format::Raw,
                    "car" => Format::Car,
                    other => return Err(refuse(400, format!("format={other}: not supported"))),
                })
            }
            "dag-scope" => {
                scope = match &*value {
                    "block" => Scope::Block,
                    "entity" => Scope::Entity,
                    "all" => Scope::All,
                    other => return Err(refuse(400, format!("dag-scope={other}: unknown"))),
                }
            }
            "filename" => filename = Some(value.into_owned()),
            "download" => download = value == "true",
            _ => {}
        }
    }
    let format = format
        .or_else(|| accept.and_then(from_accept))
        .unwrap_or(Format::Plain);
    if format == Format::Raw && !path.is_empty() {
        return Err(refuse(400, "a raw block is asked for by its CID alone"));
    }
    Ok(Wanted {
        root,
        path,
        format,
        scope,
        filename,
        download,
        slash: raw_path.ends_with('/'),
    })
}

/// The first verifiable type an `Accept` header lists (with a weight above zero).
fn from_accept(accept: &str) -> Option<Format> {
    accept.split(',').find_map(|item| {
        let mut fields = item.split(';').map(str::trim);
        let media = fields.next()?;
        let refused = fields.any(|f| f.replace(' ', "") == "q=0");
        match media {
            _ if refused => None,
            "application/vnd.ipld.raw" => Some(Format::Raw),
            "application/vnd.ipld.car" => Some(Format::Car),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "bafkqaaa";

    fn wanted(uri: &str, accept: Option<&str>) -> Result<Wanted, Refusal> {
        parse(&uri.parse().unwrap(), accept)
    }

    #[test]
    fn the_format_parameter_wins_over_accept() {
        let w = wanted(
            &format!("/ipfs/{CID}?format=car"),
            Some("application/vnd.ipld.raw"),
        )
        .unwrap();
        assert_eq!(w.format, Format::Car);
        let w = wanted(
            &format!("/ipfs/{CID}"),
            Some("text/html, application/vnd.ipld.raw;q=0.9"),
        )
        .unwrap();
        assert_eq!(w.format, Format::Raw);
        let w = wanted(
            &format!("/ipfs/{CID}"),
            Some("application/vnd.ipld.raw;q=0"),
        )
        .unwrap();
        assert_eq!(w.format, Format::Plain);
    }

    #[test]
    fn paths_are_decoded_and_checked() {
        let w = wanted(&format!("/ipfs/{CID}/a%20b/c/"), None).unwrap();
        assert_eq!(w.path, ["a b", "c"]);
        assert!(w.slash);
        assert_eq!(
            wanted(&format!("/ipfs/{CID}/a/%2e%2e"), None)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            wanted(&format!("/ipfs/{CID}/a%2fb"), None)
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(wanted("/ipfs/notacid", None).unwrap_err().status, 400);
        assert_eq!(wanted("/ipns/example.org", None).unwrap_err().status, 501);
        assert_eq!(wanted("/elsewhere", None).unwrap_err().status, 404);
    }

    #[test]
    fn a_raw_block_has_no_path() {
        assert_eq!(
            wanted(&format!("/ipfs/{CID}/x?format=raw"), None)
                .unwrap_err()
                .status,
            400
        );
        let w = wanted(
            &format!("/ipfs/{CID}?format=car&dag-scope=entity&filename=x.car"),
            None,
        )
        .unwrap();
        assert_eq!(
            (w.scope, w.filename.as_deref()),
            (Scope::Entity, Some("x.car"))
        );
    }
}
