//! Answers one request: checks it, decides the status and headers on a blocking task
//! (the store is synchronous), and streams the body from there.

use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::Arc;

use cid::Cid;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::access::Access;
use super::body::Body;
use super::listing;
use super::request::{self, Format, Refusal, Wanted};
use super::verifiable::{self, View};
use crate::store::Blocks;
use crate::unixfs::{self, list_at_most, lookup, FileReader, Node, LISTING_LIMIT};

/// `/ipfs/` content never changes.
const IMMUTABLE: &str = "public, max-age=29030400, immutable";
/// How much a ranged read asks the store for at once.
const READ_SIZE: usize = 1 << 20;
const CAR_TYPE: &str = "application/vnd.ipld.car; version=1; order=dfs; dups=n";

pub async fn handle<B>(
    req: Request<B>,
    access: Arc<dyn Access>,
) -> Result<Response<Body>, Infallible> {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        let mut r = text(405, "only GET and HEAD are served\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    if req.uri().path() == "/" {
        return Ok(text(
            200,
            "peerfs gateway: GET /ipfs/CID[/PATH] (?format=raw, ?format=car)\n",
        ));
    }
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let wanted = match request::parse(req.uri(), accept) {
        Ok(w) => w,
        Err(refusal) => return Ok(refused(refusal)),
    };
    let asked = req.headers().clone();
    let query = req.uri().query().map(str::to_owned);
    let answered = tokio::task::spawn_blocking(move || {
        answer(access, &wanted, &asked, query.as_deref()).unwrap_or_else(failed)
    })
    .await;
    let mut response = answered.unwrap_or_else(|_| text(500, "the gateway failed\n"));
    if head {
        // HEAD says how long the body would be, and sends none.
        let len = http_body::Body::size_hint(response.body()).exact();
        if let (Some(len), false) = (len, response.headers().contains_key(header::CONTENT_LENGTH)) {
            set(&mut response, header::CONTENT_LENGTH, &len.to_string());
        }
        *response.body_mut() = Body::empty();
    }
    Ok(response)
}

fn answer(
    access: Arc<dyn Access>,
    wanted: &Wanted,
    asked: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, unixfs::Error> {
    if !View::new(access.blocks()).has(&wanted.root)? {
        return Err(unixfs::Error::Missing(wanted.root));
    }
    if !access.may_serve(&wanted.root)? {
        return Ok(text(
            403,
            &format!(
                "{}: not served here (this node serves what it pinned, added or \
                 imported, and its drive only when config readers = \"*\")\n",
                wanted.root
            ),
        ));
    }
    match wanted.format {
        Format::Raw => raw(access.blocks(), wanted, asked),
        Format::Car => car(access, wanted, asked),
        Format::Plain => plain(access, wanted, asked, query),
    }
}

fn raw(
    blocks: &dyn Blocks,
    wanted: &Wanted,
    asked: &HeaderMap,
) -> Result<Response<Body>, unixfs::Error> {
    let etag = format!("\"{}.raw\"", wanted.root);
    if let Some(unchanged) = not_modified(asked, &etag) {
        return Ok(unchanged);
    }
    let data = verifiable::block(blocks, &wanted.root)?;
    Ok(verifiable_answer(
        Body::bytes(data),
        "application/vnd.ipld.raw",
        wanted,
        "bin",
        &etag,
    ))
}

fn car(
    access: Arc<dyn Access>,
    wanted: &Wanted,
    asked: &HeaderMap,
) -> Result<Response<Body>, unixfs::Error> {
    let path: String = wanted
        .path
        .iter()
        .map(|p| format!("/{}", utf8_percent_encode(p, NON_ALPHANUMERIC)))
        .collect();
    let etag = format!(
        "\"{}{path}.car.dfs.n.{}\"",
        wanted.root,
        wanted.scope.name()
    );
    if let Some(unchanged) = not_modified(asked, &etag) {
        return Ok(unchanged);
    }
    // The path is walked before the status line, so a missing block or name is a
    // clean 404, not a cut-short CAR.
    let walked = verifiable::walk(access.blocks(), wanted)?;
    let owned = wanted.clone();
    let body = Body::stream(move |out| {
        verifiable::write_car(&access, &owned, &walked, out).map_err(io::Error::other)
    });
    Ok(verifiable_answer(body, CAR_TYPE, wanted, "car", &etag))
}

/// A raw block or CAR answer: a download, never shown by a browser, cached for good.
fn verifiable_answer(
    body: Body,
    kind: &str,
    wanted: &Wanted,
    extension: &str,
    etag: &str,
) -> Response<Body> {
    let name = wanted
        .filename
        .clone()
        .unwrap_or_else(|| format!("{}.{extension}", wanted.root));
    let mut r = Response::new(body);
    set(&mut r, header::CONTENT_TYPE, kind);
    set(&mut r, header::CONTENT_DISPOSITION, &attachment(&name));
    set(&mut r, header::ETAG, etag);
    set(&mut r, header::CACHE_CONTROL, IMMUTABLE);
    set(&mut r, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(&mut r, header::VARY, "Accept");
    r
}

/// A file's bytes (with `Range`), a directory's `index.html` or listing, or a
/// symlink's target, as a browser expects them.
fn plain(
    access: Arc<dyn Access>,
    wanted: &Wanted,
    asked: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, unixfs::Error> {
    let view = View::new(access.blocks());
    let (cid, node) = unixfs::resolve(&view, &wanted.root, &wanted.path.join("/"))?;
    match node {
        Node::File(_) => file(access, wanted, cid, wanted.path.last(), asked),
        Node::Symlink { target, .. } => {
            let mut r = Response::new(Body::bytes(target));
            set(&mut r, header::CONTENT_TYPE, "text/plain; charset=utf-8");
            set(&mut r, header::CACHE_CONTROL, IMMUTABLE);
            Ok(r)
        }
        dir => {
            if !wanted.slash {
                // Relative links in the listing need the trailing slash.
                let mut location = format!("/ipfs/{}", wanted.root);
                for p in &wanted.path {
                    location.push('/');
                    location.extend(utf8_percent_encode(p, listing::COMPONENT));
                }
                location.push('/');
                if let Some(q) = query {
                    location = format!("{location}?{q}");
                }
                let mut r = text(301, "moved: a directory's address ends in /\n");
                set(&mut r, header::LOCATION, &location);
                return Ok(r);
            }
            if let Some(index) = lookup(&view, &cid, &dir, b"index.html")? {
                let index_name = "index.html".to_string();
                return file(access, wanted, index.cid, Some(&index_name), asked);
            }
            let etag = format!("\"DirIndex-peerfs_CID-{cid}\"");
            if let Some(unchanged) = not_modified(asked, &etag) {
                return Ok(unchanged);
            }
            let entries = list_at_most(&view, &cid, &dir, LISTING_LIMIT)?;
            let alone = |c: &Cid| access.may_serve(c).unwrap_or(false);
            let page = listing::page(&view, &wanted.root, &wanted.path, &cid, &entries, &alone);
            let mut r = Response::new(Body::bytes(page));
            set(&mut r, header::CONTENT_TYPE, "text/html; charset=utf-8");
            set(&mut r, header::ETAG, &etag);
            set(&mut r, header::CACHE_CONTROL, IMMUTABLE);
            Ok(r)
        }
    }
}

fn file(
    access: Arc<dyn Access>,
    wanted: &Wanted,
    cid: Cid,
    name: Option<&String>,
    asked: &HeaderMap,
) -> Result<Response<Body>, unixfs::Error> {
    let etag = format!("\"{cid}\"");
    if let Some(unchanged) = not_modified(asked, &etag) {
        return Ok(unchanged);
    }
    let size = FileReader::open(&View::new(access.blocks()), &cid)?.size();
    let name = wanted.filename.as_ref().or(name);
    let kind = content_type(access.blocks(), &cid, name.map(String::as_str));
    let range = asked
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| http_range_header::parse_range_header(v).ok());
    let (status, from, len) = match range.map(|r| r.validate(size)) {
        Some(Ok(ranges)) if ranges.len() == 1 => {
            let r = &ranges[0];
            (206, *r.start(), r.end() - r.start() + 1)
        }
        Some(Err(http_range_header::RangeUnsatisfiableError::Unsatisfiable)) => {
            let mut r = text(416, "the range is outside the file\n");
            set(&mut r, header::CONTENT_RANGE, &format!("bytes */{size}"));
            return Ok(r);
        }
        // Several ranges, or one the parser would not take: the whole file, which the
        // HTTP spec allows a server to answer any Range with.
        _ => (200, 0, size),
    };
    let mut r = Response::new(Body::stream(move |out| {
        let view = View::new(access.blocks());
        let reader = FileReader::open(&view, &cid).map_err(io::Error::other)?;
        if from == 0 && len == size {
            reader.copy_to(out, &mut |_| {}).map_err(io::Error::other)?;
        } else {
            copy_range(&reader, from, len, out)?;
        }
        Ok(())
    }));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if status == 206 {
        let last = from + len - 1;
        set(
            &mut r,
            header::CONTENT_RANGE,
            &format!("bytes {from}-{last}/{size}"),
        );
    }
    set(&mut r, header::CONTENT_LENGTH, &len.to_string());
    set(&mut r, header::CONTENT_TYPE, &kind);
    set(&mut r, header::ACCEPT_RANGES, "bytes");
    set(&mut r, header::ETAG, &etag);
    set(&mut r, header::CACHE_CONTROL, IMMUTABLE);
    if wanted.download {
        let name = name.cloned().unwrap_or_else(|| cid.to_string());
        set(&mut r, header::CONTENT_DISPOSITION, &attachment(&name));
    }
    Ok(r)
}

fn copy_range(reader: &FileReader, from: u64, len: u64, out: &mut dyn Write) -> io::Result<()> {
    let mut buf = vec![0; READ_SIZE.min(len as usize)];
    let mut at = from;
    let end = from + len;
    while at < end {
        let want = ((end - at) as usize).min(buf.len());
        let got = reader
            .read_at(at, &mut buf[..want])
            .map_err(io::Error::other)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early",
            ));
        }
        out.write_all(&buf[..got])?;
        at += got as u64;
    }
    Ok(())
}

/// The type a file's name says, else text when its first bytes are UTF-8 without NULs,
/// else bytes.
fn content_type(blocks: &dyn Blocks, cid: &Cid, name: Option<&str>) -> String {
    if let Some(mime) = name.and_then(|n| mime_guess::from_path(n).first()) {
        return if mime.type_() == mime_guess::mime::TEXT {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_string()
        };
    }
    let mut start = [0u8; 512];
    let view = View::new(blocks);
    let got = FileReader::open(&view, cid)
        .and_then(|r| r.read_at(0, &mut start))
        .unwrap_or(0);
    let start = &start[..got];
    let text = !start.contains(&0)
        && match std::str::from_utf8(start) {
            Ok(_) => true,
            // A character cut at the 512th byte is still text.
            Err(e) => e.error_len().is_none(),
        };
    if text && got > 0 {
        "text/plain; charset=utf-8".into()
    } else {
        "application/octet-stream".into()
    }
}

/// A 304 when the client already holds this answer.
fn not_modified(asked: &HeaderMap, etag: &str) -> Option<Response<Body>> {
    let held = asked.get(header::IF_NONE_MATCH)?.to_str().ok()?;
    let matches = held
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    matches.then(|| {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        set(&mut r, header::ETAG, etag);
        set(&mut r, header::CACHE_CONTROL, IMMUTABLE);
        r
    })
}

/// `Content-Disposition: attachment` with the name in both the plain and the UTF-8 form.
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        utf8_percent_encode(name, NON_ALPHANUMERIC)
    )
}

fn set(r: &mut Response<Body>, name: HeaderName, value: &str) {
    // Every value here is built from CIDs, numbers and escaped names; one that is not
    // a valid header value is left out rather than failing the answer.
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(name, v);
    }
}

fn text(status: u16, message: &str) -> Response<Body> {
    let mut r = Response::new(Body::bytes(message.to_owned()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    set(&mut r, header::CONTENT_TYPE, "text/plain; charset=utf-8");
    r
}

fn refused(refusal: Refusal) -> Response<Body> {
    text(refusal.status, &format!("{}\n", refusal.message))
}

/// The status an error answers with: what is not here or not there is a 404 (this
/// gateway serves only what the node holds), a bad DAG a 502, the store failing a 500.
fn failed(e: unixfs::Error) -> Response<Body> {
    let status = match &e {
        unixfs::Error::Missing(_) | unixfs::Error::NotFound(_) => 404,
        unixfs::Error::NotADirectory(_) | unixfs::Error::NotAFile(_) => 400,
        unixfs::Error::IsADirectory(_) | unixfs::Error::NotEmpty(_) => 400,
        unixfs::Error::Malformed { .. } | unixfs::Error::HashCollision => 502,
        unixfs::Error::Store(_) | unixfs::Error::Io(_) => {
            tracing::warn!("gateway: {e}");
            500
        }
        // Held whole to list, the directory would take more memory than we give one.
        unixfs::Error::TooManyEntries { .. } => 507,
    };
    let why = match &e {
        unixfs::Error::Missing(cid) => {
            format!("block {cid} is not on this node (the gateway fetches nothing)")
        }
        other => other.to_string(),
    };
    text(status, &format!("{why}\n"))
}
