//! The virtio-vsock packet header (virtio 1.2 §5.10.6): 44 little-endian bytes, no padding.

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_SIZE: usize = 44;
/// The host's CID, as every guest addresses it.
pub const HOST_CID: u64 = 2;
/// The only socket type offered.
pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(bytes: &[u8; HDR_SIZE]) -> Self {
        let mut at = 0;
        let mut take = |n: usize| {
            let field = &bytes[at..at + n];
            at += n;
            field
        };
        let u64_ = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or_default());
        let u32_ = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default());
        let u16_ = |b: &[u8]| u16::from_le_bytes(b.try_into().unwrap_or_default());
        Self {
            src_cid: u64_(take(8)),
            dst_cid: u64_(take(8)),
            src_port: u32_(take(4)),
            dst_port: u32_(take(4)),
            len: u32_(take(4)),
            type_: u16_(take(2)),
            op: u16_(take(2)),
            flags: u32_(take(4)),
            buf_alloc: u32_(take(4)),
            fwd_cnt: u32_(take(4)),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_SIZE] {
        let mut bytes = [0; HDR_SIZE];
        let fields: [&[u8]; 10] = [
            &self.src_cid.to_le_bytes(),
            &self.dst_cid.to_le_bytes(),
            &self.src_port.to_le_bytes(),
            &self.dst_port.to_le_bytes(),
            &self.len.to_le_bytes(),
            &self.type_.to_le_bytes(),
            &self.op.to_le_bytes(),
            &self.flags.to_le_bytes(),
            &self.buf_alloc.to_le_bytes(),
            &self.fwd_cnt.to_le_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            bytes[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_the_spec() {
        let header = Header {
            src_cid: 0x0102_0304_0506_0708,
            dst_cid: 2,
            src_port: 0x1112_1314,
            dst_port: 1234,
            len: 5,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 3,
            buf_alloc: 0x2122_2324,
            fwd_cnt: 0x3132_3334,
        };
        let bytes = header.to_bytes();
        assert_eq!(bytes[..8], 0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bytes[16..20], 0x1112_1314u32.to_le_bytes());
        assert_eq!(bytes[28..30], TYPE_STREAM.to_le_bytes());
        assert_eq!(bytes[30..32], OP_RW.to_le_bytes());
        assert_eq!(bytes[40..44], 0x3132_3334u32.to_le_bytes());
        assert_eq!(Header::from_bytes(&bytes), header);
    }
}
