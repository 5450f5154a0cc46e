use super::*;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::virtio::testing::{memory, Driver, DATA, INTERRUPT_ACK, INTERRUPT_STATUS};

/// A writer the test can read back.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn output_reaches_the_writer() {
    let sink = Sink::default();
    let mem = memory();
    let mut driver = Driver::new(&mem, Box::new(Console::new(Box::new(sink.clone()))));
    driver.init(u64::MAX, 2);
    driver.write_mem(DATA, b"hello, ");
    driver.write_mem(DATA + 0x100, b"world\n");
    let head = driver.add_chain(1, &[(DATA, 7, false), (DATA + 0x100, 6, false)]);
    driver.notify(1);
    assert_eq!(&*sink.0.lock().unwrap(), b"hello, world\n");
    assert_eq!(driver.used(1), vec![(u32::from(head), 0)]);
    assert!(driver.irq_fired());
}

#[test]
fn input_reaches_receive_buffers() {
    let mem = memory();
    let console = Console::new(Box::new(io::sink()));
    let input = console.input();
    // Typed before the guest is up: kept until it posts buffers.
    assert_eq!(console.queue_input(b"early "), 6);
    let mut driver = Driver::new(&mem, Box::new(console));
    driver.init(u64::MAX, 2);
    let first = driver.add_chain(0, &[(DATA, 4, true)]);
    let second = driver.add_chain(0, &[(DATA + 0x100, 64, true)]);
    driver.notify(0);
    assert_eq!(
        driver.used(0),
        vec![(u32::from(first), 4), (u32::from(second), 2)]
    );
    assert_eq!(driver.read_mem(DATA, 4), b"earl");
    assert_eq!(driver.read_mem(DATA + 0x100, 2), b"y ");
    assert!(driver.irq_fired());
    // Handled as a guest does: read the status, acknowledge it.
    let status = driver.read32(INTERRUPT_STATUS);
    driver.write32(INTERRUPT_ACK, status);

    // Nothing pending: posted buffers wait, no interrupt.
    let third = driver.add_chain(0, &[(DATA + 0x200, 64, true)]);
    driver.notify(0);
    assert_eq!(driver.used(0).len(), 2);
    assert!(!driver.irq_fired());

    // Input from another thread is delivered at once, with an interrupt.
    driver.set_used_event(0, 2);
    std::thread::spawn(move || input.queue_input(b"late"))
        .join()
        .unwrap();
    assert_eq!(driver.used(0)[2], (u32::from(third), 4));
    assert_eq!(driver.read_mem(DATA + 0x200, 4), b"late");
    assert!(driver.irq_fired());
    assert_eq!(driver.read32(INTERRUPT_STATUS) & 1, 1);
}

#[test]
fn pending_input_is_bounded() {
    let console = Console::new(Box::new(io::sink()));
    assert_eq!(console.queue_input(&vec![b'x'; MAX_PENDING + 10]), MAX_PENDING);
    assert_eq!(console.queue_input(b"more"), 0);
}

#[test]
fn input_not_yet_delivered_survives_a_snapshot() {
    let mem = memory();
    let console = Console::new(Box::new(io::sink()));
    let input = console.input();
    let mut driver = Driver::new(&mem, Box::new(console));
    driver.init(u64::MAX, 2);
    // Typed while the guest has no receive buffer.
    assert_eq!(input.queue_input(b"typed"), 5);
    let saved = driver.transport.save().expect("a console can be saved");
    assert_eq!(saved.device_data, b"typed");

    // The guest posts a buffer (without notifying) before the snapshot lands in a new process.
    let head = driver.add_chain(0, &[(DATA, 64, true)]);
    driver.transport = MmioTransport::new(
        mem.clone(),
        Box::new(Console::new(Box::new(io::sink()))),
        driver.irq.clone(),
    );
    assert!(driver.transport.restore(&saved));
    assert_eq!(driver.used(0), vec![(u32::from(head), 5)]);
    assert_eq!(driver.read_mem(DATA, 5), b"typed");
    assert!(driver.irq_fired());
}
