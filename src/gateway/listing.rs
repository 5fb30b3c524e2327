//! A directory as an HTML page for a person with a browser: name, size, CID, and links
//! into subdirectories and files.

use std::fmt::Write;

use cid::Cid;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::store::Blocks;
use crate::unixfs::build::DirEntry;
use crate::unixfs::{load_node, Node};

/// What a path component must escape to stay one component in an href.
pub(super) const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\');

/// The page for the directory `cid`, shown at `/ipfs/{root}/{path}`. Each entry's
/// size and kind come from its own block; an entry whose block is not here shows
/// as unknown instead of failing the page. An entry's CID links to `/ipfs/{cid}` only
/// when `served_alone` says that address is served (a pin, an open drive's block):
/// below a pinned root, the rest is served along the path, not by its own CID.
pub fn page(
    blocks: &dyn Blocks,
    root: &Cid,
    path: &[String],
    cid: &Cid,
    entries: &[DirEntry],
    served_alone: &dyn Fn(&Cid) -> bool,
) -> String {
    let shown = std::iter::once(root.to_string())
        .chain(path.iter().cloned())
        .collect::<Vec<_>>()
        .join("/");
    let mut html = String::with_capacity(256 + entries.len() * 300);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>/ipfs/{title}</title><style>\
         body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}\
         h1{{font-size:1.4em;overflow-wrap:anywhere}}\
         table{{border-collapse:collapse}}td,th{{padding:.25em 1em;text-align:left}}\
         tr:nth-child(even){{background:#f4f4f4}}td.size{{text-align:right}}\
         .cid{{font-family:monospace;font-size:.85em;color:#666}}\
         </style></head><body>\n<h1>Index of /ipfs/{title}</h1>\n\
         <p class=\"cid\">{cid}</p>\n<table>\n\
         <tr><th>Name</th><th>Size</th><th>CID</th></tr>\n",
        title = escape(&shown),
    );
    if !path.is_empty() {
        html.push_str("<tr><td><a href=\"../\">..</a></td><td></td><td></td></tr>\n");
    }
    for entry in entries {
        let name = String::from_utf8_lossy(&entry.name);
        let (size, dir) = match load_node(blocks, &entry.cid) {
            Ok(Node::File(f)) => (bytesize::ByteSize(f.filesize).to_string(), false),
            Ok(n) if n.is_dir() => (String::new(), true),
            Ok(Node::Symlink { .. }) => ("symlink".to_string(), false),
            _ => ("?".to_string(), false),
        };
        let href = utf8_percent_encode(&name, COMPONENT).to_string() + if dir { "/" } else { "" };
        let slash = if dir { "/" } else { "" };
        let cid = entry.cid;
        let cid_cell = if served_alone(&cid) {
            format!("<a class=\"cid\" href=\"/ipfs/{cid}{slash}\">{cid}</a>")
        } else {
            format!("<span class=\"cid\">{cid}</span>")
        };
        let _ = writeln!(
            html,
            "<tr><td><a href=\"{href}\">{name}{slash}</a></td><td class=\"size\">{size}</td>\
             <td>{cid_cell}</td></tr>",
            href = escape(&href),
            name = escape(&name),
        );
    }
    html.push_str("</table>\n</body></html>\n");
    html
}

/// Text as HTML shows it, whatever it holds.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_break_out_of_the_page() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
        assert_eq!(
            utf8_percent_encode("a b?#/%", COMPONENT).to_string(),
            "a%20b%3F%23%2F%25"
        );
    }
}
