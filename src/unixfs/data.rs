//! The UnixFS `Data` message carried in a DAG-PB node's Data field (UnixFS 1.5).

use super::wire::{self, Reader};
use super::FormatError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataType {
    Raw = 0,
    Directory = 1,
    File = 2,
    Metadata = 3,
    Symlink = 4,
    HamtShard = 5,
}

impl DataType {
    fn from_code(code: u64) -> Result<DataType, FormatError> {
        Ok(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return Err(FormatError::UnixFs("unknown node type")),
        })
    }
}

/// Modification time as UnixFS 1.5 stores it: seconds since the epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub secs: i64,
    pub nanos: u32,
}

/// The fields of UnixFS 1.5 that rsync and `ls -l` need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits (`0o7777` at most); `None` when the node carries no mode.
    pub mode: Option<u32>,
    pub mtime: Option<Mtime>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.mtime.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnixFsData {
    pub kind: DataType,
    pub data: Option<Vec<u8>>,
    pub filesize: Option<u64>,
    pub blocksizes: Vec<u64>,
    pub hash_type: Option<u64>,
    pub fanout: Option<u64>,
    pub meta: Metadata,
}

impl UnixFsData {
    pub fn new(kind: DataType) -> Self {
        UnixFsData {
            kind,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
            meta: Metadata::default(),
        }
    }

    /// Encodes in field-number order, as Kubo and the JS importer do. Empty data is
    /// left out, and zero nanoseconds are not written (Kubo's form).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.data.as_ref().map_or(0, Vec::len));
        wire::put_uint(&mut out, 1, self.kind as u64);
        if let Some(d) = self.data.as_ref().filter(|d| !d.is_empty()) {
            wire::put_bytes(&mut out, 2, d);
        }
        if let Some(s) = self.filesize {
            wire::put_uint(&mut out, 3, s);
        }
        for &b in &self.blocksizes {
            wire::put_uint(&mut out, 4, b);
        }
        if let Some(h) = self.hash_type {
            wire::put_uint(&mut out, 5, h);
        }
        if let Some(f) = self.fanout {
            wire::put_uint(&mut out, 6, f);
        }
        if let Some(m) = self.meta.mode {
            wire::put_uint(&mut out, 7, u64::from(m));
        }
        if let Some(t) = self.meta.mtime {
            let mut inner = Vec::with_capacity(16);
            // int64 on the wire: negative seconds are their two's complement.
            wire::put_uint(&mut inner, 1, t.secs as u64);
            if t.nanos != 0 {
                wire::put_key(&mut inner, 2, wire::FIXED32);
                inner.extend_from_slice(&t.nanos.to_le_bytes());
            }
            wire::put_bytes(&mut out, 8, &inner);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<UnixFsData, FormatError> {
        let mut r = Reader::new(bytes);
        let mut kind = None;
        let mut d = UnixFsData::new(DataType::Raw);
        while !r.is_empty() {
            let (field, wt) = r.key()?;
            match (field, wt) {
                (1, wire::VARINT) => kind = Some(DataType::from_code(r.varint()?)?),
                (2, wire::LEN) => d.data = Some(r.bytes()?.to_vec()),
                (3, wire::VARINT) => d.filesize = Some(r.varint()?),
                (4, wire::VARINT) => d.blocksizes.push(r.varint()?),
                (4, wire::LEN) => {
                    // Packed form: not what the importers write, but valid protobuf.
                    let mut packed = Reader::new(r.bytes()?);
                    while !packed.is_empty() {
                        d.blocksizes.push(packed.varint()?);
                    }
                }
                (5, wire::VARINT) => d.hash_type = Some(r.varint()?),
                (6, wire::VARINT) => d.fanout = Some(r.varint()?),
                (7, wire::VARINT) => {
                    let mode = r.varint()?;
                    d.meta.mode = Some((mode & 0o7777) as u32);
                }
                (8, wire::LEN) => d.meta.mtime = Some(decode_mtime(r.bytes()?)?),
                (_, wt) => r.skip(wt)?,
            }
        }
        d.kind = kind.ok_or(FormatError::UnixFs("Data has no Type"))?;
        Ok(d)
    }
}

fn decode_mtime(bytes: &[u8]) -> Result<Mtime, FormatError> {
    let mut r = Reader::new(bytes);
    let mut t = Mtime::default();
    while !r.is_empty() {
        match r.key()? {
            (1, wire::VARINT) => t.secs = r.varint()? as i64,
            (2, wire::FIXED32) => t.nanos = r.fixed32()?,
            (_, wt) => r.skip(wt)?,
        }
    }
    if t.nanos > 999_999_999 {
        return Err(FormatError::UnixFs("mtime nanoseconds out of range"));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_including_negative_times() {
        let mut d = UnixFsData::new(DataType::File);
        d.filesize = Some(3);
        d.data = Some(b"abc".to_vec());
        d.meta = Metadata {
            mode: Some(0o640),
            mtime: Some(Mtime { secs: -5, nanos: 7 }),
        };
        assert_eq!(UnixFsData::decode(&d.encode()).unwrap(), d);
    }

    #[test]
    fn zero_nanoseconds_are_omitted() {
        let mut d = UnixFsData::new(DataType::Directory);
        d.meta.mtime = Some(Mtime { secs: 1, nanos: 0 });
        // Type, then mtime {seconds: 1} only.
        assert_eq!(d.encode(), vec![0x08, 0x01, 0x42, 0x02, 0x08, 0x01]);
    }
}
