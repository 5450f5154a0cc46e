//! Drives the block device through the MMIO registers as Linux's virtio_blk would.

use super::*;
use crate::devices::virtio::testing::{memory, Driver, DATA, INTERRUPT_STATUS};
use crate::GuestMemory;
use std::io::Write;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
    VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use vmm_sys_util::tempfile::TempFile;

const HEADER: u64 = DATA;
const STATUS: u64 = DATA + 0x100;
const BUFFER: u64 = DATA + 0x1000;
const SECTORS: u64 = 16;

fn disk_file() -> TempFile {
    let file = TempFile::new_with_prefix("/tmp/vessel-vmm-blk").unwrap();
    file.as_file().set_len(SECTORS * 512).unwrap();
    file
}

fn driver(mem: &GuestMemory, block: Block) -> Driver<'_> {
    let mut driver = Driver::new(mem, Box::new(block));
    let status = driver.init(u64::MAX, 1);
    assert_eq!(status & 0x4, 0x4, "DRIVER_OK set");
    driver
}

fn header(driver: &Driver, request_type: u32, sector: u64) {
    let mut bytes = [0u8; 16];
    bytes[0..4].copy_from_slice(&request_type.to_le_bytes());
    bytes[8..16].copy_from_slice(&sector.to_le_bytes());
    driver.write_mem(HEADER, &bytes);
    driver.write_mem(STATUS, &[0xff]);
}

/// Sends a request with a data buffer of `len` bytes; returns (status, used length).
fn request(driver: &mut Driver, request_type: u32, sector: u64, len: u32) -> (u8, u32) {
    header(driver, request_type, sector);
    let data_writable = request_type != VIRTIO_BLK_T_OUT;
    let mut bufs = vec![(HEADER, 16, false)];
    if len > 0 {
        bufs.push((BUFFER, len, data_writable));
    }
    bufs.push((STATUS, 1, true));
    send(driver, &bufs)
}

fn send(driver: &mut Driver, bufs: &[(u64, u32, bool)]) -> (u8, u32) {
    let head = driver.add_chain(0, bufs);
    driver.notify(0);
    let &(id, len) = driver.used(0).last().expect("a used entry");
    assert_eq!(id, u32::from(head));
    (driver.read_mem(STATUS, 1)[0], len)
}

#[test]
fn write_then_read_round_trip() {
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "0").unwrap());
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
    driver.write_mem(BUFFER, &pattern);
    let (status, len) = request(&mut driver, VIRTIO_BLK_T_OUT, 1, 1024);
    assert_eq!((u32::from(status), len), (VIRTIO_BLK_S_OK, 1));
    assert!(driver.irq_fired());
    assert_eq!(driver.read32(INTERRUPT_STATUS) & 1, 1);

    let on_disk = std::fs::read(file.as_path()).unwrap();
    assert_eq!(&on_disk[512..1536], &pattern[..]);
    assert!(on_disk[..512].iter().all(|&b| b == 0));

    driver.write_mem(BUFFER, &[0; 1024]);
    let (status, len) = request(&mut driver, VIRTIO_BLK_T_IN, 1, 1024);
    assert_eq!((u32::from(status), len), (VIRTIO_BLK_S_OK, 1025));
    assert_eq!(driver.read_mem(BUFFER, 1024), pattern);
}

#[test]
fn indirect_chain_is_followed() {
    let file = disk_file();
    std::fs::write(file.as_path(), vec![0x5a; (SECTORS * 512) as usize]).unwrap();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "0").unwrap());
    header(&driver, VIRTIO_BLK_T_IN, 2);
    let table = DATA + 0x8000;
    let bufs = [(HEADER, 16, false), (BUFFER, 512, true), (STATUS, 1, true)];
    let head = driver.add_indirect_chain(0, table, &bufs);
    driver.notify(0);
    assert_eq!(driver.used(0), vec![(u32::from(head), 513)]);
    assert_eq!(driver.read_mem(STATUS, 1)[0], VIRTIO_BLK_S_OK as u8);
    assert_eq!(driver.read_mem(BUFFER, 512), vec![0x5a; 512]);
}

#[test]
fn flush_and_get_id() {
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "disk-7").unwrap());
    let (status, _) = request(&mut driver, VIRTIO_BLK_T_FLUSH, 0, 0);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);

    driver.write_mem(BUFFER, &[0xff; 20]);
    let (status, len) = request(&mut driver, VIRTIO_BLK_T_GET_ID, 0, 20);
    assert_eq!((u32::from(status), len), (VIRTIO_BLK_S_OK, 21));
    let mut expected = b"disk-7".to_vec();
    expected.resize(20, 0);
    assert_eq!(driver.read_mem(BUFFER, 20), expected);
}

#[test]
fn config_space_and_features() {
    let file = disk_file();
    let mem = memory();
    let block = Block::open(file.as_path(), true, "ro").unwrap();
    assert_eq!(block.capacity(), SECTORS);
    let mut driver = driver(&mem, block);
    use crate::devices::bus::BusDevice;
    let mut capacity = [0u8; 8];
    driver.transport.read(0x100, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), SECTORS);
    assert_eq!(driver.read32(0x104), 0, "high half of the capacity");
    assert_eq!(driver.read32(0x10c), 254, "seg_max");
    assert_ne!(driver.offered() & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(driver.offered() & (1 << VIRTIO_BLK_F_FLUSH), 0);
}

#[test]
fn read_only_disk_rejects_writes() {
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), true, "0").unwrap());
    driver.write_mem(BUFFER, &[0xaa; 512]);
    let (status, len) = request(&mut driver, VIRTIO_BLK_T_OUT, 0, 512);
    assert_eq!((u32::from(status), len), (VIRTIO_BLK_S_IOERR, 1));
    assert!(std::fs::read(file.as_path()).unwrap().iter().all(|&b| b == 0));
    let (status, _) = request(&mut driver, VIRTIO_BLK_T_IN, 0, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
}

#[test]
fn out_of_range_and_unaligned_requests_fail() {
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "0").unwrap());
    for (request_type, sector, len) in [
        (VIRTIO_BLK_T_IN, SECTORS - 1, 1024),
        (VIRTIO_BLK_T_OUT, SECTORS, 512),
        (VIRTIO_BLK_T_IN, u64::MAX, 512),
        (VIRTIO_BLK_T_IN, u64::MAX / 512, 512),
        (VIRTIO_BLK_T_IN, 0, 100),
    ] {
        let (status, _) = request(&mut driver, request_type, sector, len);
        assert_eq!(
            u32::from(status),
            VIRTIO_BLK_S_IOERR,
            "{request_type} {sector} {len}"
        );
    }
    // The last sector itself is fine, and the file did not grow.
    let (status, _) = request(&mut driver, VIRTIO_BLK_T_OUT, SECTORS - 1, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    assert_eq!(file.as_file().metadata().unwrap().len(), SECTORS * 512);
    let (status, _) = request(&mut driver, 99, 0, 0);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_UNSUPP);
}

#[test]
fn malformed_chains_are_returned_without_panic() {
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "0").unwrap());
    header(&driver, VIRTIO_BLK_T_IN, 0);
    // Header only: nowhere to write a status; the chain comes back with nothing written.
    assert_eq!(send(&mut driver, &[(HEADER, 16, false)]).1, 0);
    // Status descriptor not writable.
    assert_eq!(send(&mut driver, &[(HEADER, 16, false), (STATUS, 1, false)]).1, 0);
    // Short header.
    let (status, len) = send(&mut driver, &[(HEADER, 8, false), (STATUS, 1, true)]);
    assert_eq!((u32::from(status), len), (VIRTIO_BLK_S_IOERR, 1));
    // No header at all, just a status byte.
    let (status, _) = send(&mut driver, &[(STATUS, 1, true)]);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_IOERR);
    // A data buffer outside guest memory: the chain is returned untouched.
    header(&driver, VIRTIO_BLK_T_IN, 0);
    let bufs = [(HEADER, 16, false), (0x1000_0000, 512, true), (STATUS, 1, true)];
    assert_eq!(send(&mut driver, &bufs), (0xff, 0));
    // A buffer straddling the end of guest memory.
    let bufs = [
        (HEADER, 16, false),
        (0x10_0000 - 256, 512, true),
        (STATUS, 1, true),
    ];
    assert_eq!(send(&mut driver, &bufs), (0xff, 0));
    // A writable header: the device reads no header, so IOERR.
    let bufs = [(HEADER, 16, true), (STATUS, 1, true)];
    let (status, _) = send(&mut driver, &bufs);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_IOERR);
    // The device still works.
    let (status, _) = request(&mut driver, VIRTIO_BLK_T_IN, 0, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
}

#[test]
fn second_writer_is_refused() {
    let file = disk_file();
    let first = Block::open(file.as_path(), false, "0").unwrap();
    let err = Block::open(file.as_path(), false, "1").err().unwrap();
    assert!(matches!(err, BlockError::InUse { .. }));
    assert_eq!(
        err.to_string(),
        format!("disk {} is in use by another VM", file.as_path().display())
    );
    assert!(matches!(
        Block::open(file.as_path(), true, "1").err().unwrap(),
        BlockError::InUse { .. }
    ));
    drop(first);
    let reader = Block::open(file.as_path(), true, "0").unwrap();
    let _second_reader = Block::open(file.as_path(), true, "1").unwrap();
    assert!(matches!(
        Block::open(file.as_path(), false, "2").err().unwrap(),
        BlockError::InUse { .. }
    ));
    drop(reader);
}

#[test]
fn open_errors_name_the_path() {
    let err = Block::open("/nonexistent/vessel.img", false, "0").err().unwrap();
    assert!(matches!(err, BlockError::NotFound { .. }));
    assert!(err.to_string().contains("/nonexistent/vessel.img"));
    let err = Block::open("/tmp", true, "0").err().unwrap();
    assert!(matches!(err, BlockError::NotADisk { .. }), "{err}");
    let err = Block::open("/tmp", false, "0").err().unwrap();
    assert!(matches!(err, BlockError::NotADisk { .. }), "{err}");
}

#[test]
fn partial_trailing_sector_is_not_exposed() {
    let file = TempFile::new_with_prefix("/tmp/vessel-vmm-blk").unwrap();
    file.as_file().write_all(&[1; 1000]).unwrap();
    assert_eq!(Block::open(file.as_path(), true, "0").unwrap().capacity(), 1);
}

#[test]
fn saved_transport_state_resumes_the_queue_on_a_new_device() {
    use crate::devices::virtio::mmio::MmioTransport;
    use crate::devices::virtio::Rng;
    let file = disk_file();
    let mem = memory();
    let mut driver = driver(&mem, Block::open(file.as_path(), false, "0").unwrap());
    let pattern: Vec<u8> = (0..512u32).map(|i| (i * 3) as u8).collect();
    driver.write_mem(BUFFER, &pattern);
    let (status, _) = request(&mut driver, VIRTIO_BLK_T_OUT, 2, 512);
    assert_eq!(u32::from(status), VIRTIO_BLK_S_OK);
    let saved = driver.transport.save().expect("block devices can be saved");
    assert!(saved.active && saved.queues[0].next_avail == 1 && saved.queues[0].next_used == 1);

    // The old device (and its disk lock) goes; a new one on the same file takes the state.
    let irq = driver.irq.clone();
    drop(std::mem::replace(
        &mut driver.transport,
        MmioTransport::new(mem.clone(), Box::new(Rng::new()), irq.clone()),
    ));
    driver.transport = MmioTransport::new(
        mem.clone(),
        Box::new(Block::open(file.as_path(), false, "0").unwrap()),
        irq,
    );
    assert!(driver.transport.restore(&saved));
    driver.write_mem(BUFFER, &[0; 512]);
    let (status, len) = request(&mut driver, VIRTIO_BLK_T_IN, 2, 512);
    assert_eq!(
        (u32::from(status), len),
        (VIRTIO_BLK_S_OK, 513),
        "the next request is served"
    );
    assert_eq!(driver.read_mem(BUFFER, 512), pattern);
    let mut wrong = saved.clone();
    wrong.device_type = 4;
    assert!(
        !driver.transport.restore(&wrong),
        "another device type is refused"
    );
}
