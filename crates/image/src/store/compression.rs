//! Reading files that may be gzip or zstd compressed (told by their magic bytes), including pipes such as
//! /dev/stdin: the file is opened and read once.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use super::{io_err, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// `path`'s content, decompressed, and how it was compressed.
pub fn open_decompressed(path: &Path) -> Result<(Compression, Box<dyn Read>), StoreError> {
    let mut f = File::open(path).map_err(io_err("open", path))?;
    let mut head = Vec::with_capacity(4);
    (&mut f)
        .take(4)
        .read_to_end(&mut head)
        .map_err(io_err("read", path))?;
    let kind = match head.as_slice() {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        _ => Compression::None,
    };
    let whole = BufReader::new(Cursor::new(head).chain(f));
    let reader: Box<dyn Read> = match kind {
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(whole).map_err(io_err("read", path))?),
        Compression::None => Box::new(whole),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_plain_gzip_and_zstd() {
        let dir = std::env::temp_dir().join(format!("vessel-compression-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = b"hello, layers".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let cases = [
            (Compression::None, data.clone()),
            (Compression::Gzip, gz.finish().unwrap()),
            (Compression::Zstd, zstd::encode_all(data.as_slice(), 1).unwrap()),
            (Compression::None, b"ab".to_vec()),
        ];
        for (i, (kind, bytes)) in cases.iter().enumerate() {
            let p = dir.join(i.to_string());
            std::fs::write(&p, bytes).unwrap();
            let (k, mut r) = open_decompressed(&p).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(k, *kind);
            assert_eq!(out, if i == 3 { b"ab".to_vec() } else { data.clone() });
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
