//! DAG-PB, the IPLD codec UnixFS nodes are written in.
//!
//! Encoding is canonical (Links, field 2, before Data, field 1; link fields in number
//! order), so a node always hashes to the CID the reference implementations give it.
//! Decoding is as strict as the DAG-PB spec asks: unknown fields, a Data field before a
//! link, two Data fields or a link without a Hash are errors, not guesses.

use cid::Cid;

use super::wire::{self, Reader};
use super::FormatError;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PbNode {
    pub links: Vec<PbLink>,
    pub data: Option<Vec<u8>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PbLink {
    pub cid: Cid,
    /// Entry name as bytes: names on Linux are bytes, and UTF-8 ones round-trip unchanged.
    pub name: Option<Vec<u8>>,
    /// Cumulative size of the linked DAG, as the reference importers count it.
    pub tsize: Option<u64>,
}

impl PbLink {
    pub fn new(cid: Cid, name: impl Into<Vec<u8>>, tsize: u64) -> Self {
        PbLink {
            cid,
            name: Some(name.into()),
            tsize: Some(tsize),
        }
    }

    fn body_len(&self) -> u64 {
        let mut n = wire::bytes_field_len(self.cid.encoded_len() as u64);
        if let Some(name) = &self.name {
            n += wire::bytes_field_len(name.len() as u64);
        }
        if let Some(t) = self.tsize {
            n += 1 + wire::varint_len(t);
        }
        n
    }

    /// Bytes this link adds to an encoded node.
    pub fn encoded_len(&self) -> u64 {
        wire::bytes_field_len(self.body_len())
    }
}

impl PbNode {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len() as usize);
        let mut cid_bytes = Vec::with_capacity(40);
        for link in &self.links {
            wire::put_key(&mut out, 2, wire::LEN);
            wire::put_varint(&mut out, link.body_len());
            cid_bytes.clear();
            link.cid
                .write_bytes(&mut cid_bytes)
                .expect("writing to a Vec cannot fail");
            wire::put_bytes(&mut out, 1, &cid_bytes);
            if let Some(name) = &link.name {
                wire::put_bytes(&mut out, 2, name);
            }
            if let Some(t) = link.tsize {
                wire::put_uint(&mut out, 3, t);
            }
        }
        if let Some(data) = &self.data {
            wire::put_bytes(&mut out, 1, data);
        }
        out
    }

    pub fn encoded_len(&self) -> u64 {
        let links: u64 = self.links.iter().map(PbLink::encoded_len).sum();
        links
            + self
                .data
                .as_ref()
                .map_or(0, |d| wire::bytes_field_len(d.len() as u64))
    }

    /// Encoded size of a node with these links and this Data, without building it.
    pub fn encoded_len_of(links: &[PbLink], data: &[u8]) -> u64 {
        links.iter().map(PbLink::encoded_len).sum::<u64>()
            + wire::bytes_field_len(data.len() as u64)
    }

    pub fn decode(bytes: &[u8]) -> Result<PbNode, FormatError> {
        let mut r = Reader::new(bytes);
        let mut node = PbNode::default();
        while !r.is_empty() {
            let (field, wire_type) = r.key()?;
            Reader::expect(wire_type, wire::LEN)?;
            match field {
                2 if node.data.is_none() => node.links.push(decode_link(r.bytes()?)?),
                2 => return Err(FormatError::DagPb("a link follows the Data field")),
                1 if node.data.is_none() => node.data = Some(r.bytes()?.to_vec()),
                1 => return Err(FormatError::DagPb("two Data fields")),
                _ => return Err(FormatError::DagPb("unknown field in PBNode")),
            }
        }
        Ok(node)
    }
}

fn decode_link(bytes: &[u8]) -> Result<PbLink, FormatError> {
    let mut r = Reader::new(bytes);
    let mut cid = None;
    let mut name = None;
    let mut tsize = None;
    let mut last_field = 0;
    while !r.is_empty() {
        let (field, wire_type) = r.key()?;
        if field <= last_field {
            return Err(FormatError::DagPb("PBLink fields out of order or repeated"));
        }
        last_field = field;
        match field {
            1 => {
                Reader::expect(wire_type, wire::LEN)?;
                let raw = r.bytes()?;
                cid = Some(
                    Cid::try_from(raw).map_err(|_| FormatError::DagPb("link Hash is not a CID"))?,
                );
            }
            2 => {
                Reader::expect(wire_type, wire::LEN)?;
                name = Some(r.bytes()?.to_vec());
            }
            3 => {
                Reader::expect(wire_type, wire::VARINT)?;
                tsize = Some(r.varint()?);
            }
            _ => return Err(FormatError::DagPb("unknown field in PBLink")),
        }
    }
    let cid = cid.ok_or(FormatError::DagPb("link without a Hash"))?;
    Ok(PbLink { cid, name, tsize })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{cid_of, RAW};

    #[test]
    fn links_are_written_before_data_and_round_trip() {
        let child = cid_of(cid::Version::V1, RAW, b"x");
        let node = PbNode {
            links: vec![PbLink::new(child, "a b", 1)],
            data: Some(vec![8, 1]),
        };
        let bytes = node.encode();
        assert_eq!(bytes[0], 0x12, "field 2 (Links) comes first");
        assert_eq!(bytes.len() as u64, node.encoded_len());
        assert_eq!(PbNode::decode(&bytes).unwrap(), node);
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        // Data then a link.
        let child = cid_of(cid::Version::V1, RAW, b"x");
        let good = PbNode {
            links: vec![PbLink::new(child, "", 1)],
            data: None,
        }
        .encode();
        let mut bad = vec![0x0a, 0x00];
        bad.extend_from_slice(&good);
        assert!(PbNode::decode(&bad).is_err());
        // An unknown field.
        assert!(PbNode::decode(&[0x1a, 0x00]).is_err());
        // A link whose Hash is not a CID.
        assert!(PbNode::decode(&[0x12, 0x03, 0x0a, 0x01, 0xff]).is_err());
    }
}
