//! The register interface, driven as Linux's virtio_mmio does, with virtio-rng behind it.

use super::*;
use crate::devices::virtio::testing::{
    memory, Driver, DATA, INTERRUPT_ACK, INTERRUPT_STATUS, NOTIFY, QUEUE_READY, QUEUE_SEL, STATUS,
};
use crate::devices::virtio::Rng;
use virtio_bindings::virtio_config::VIRTIO_CONFIG_S_NEEDS_RESET;

const DRIVER_OK: u32 = VIRTIO_CONFIG_S_DRIVER_OK;
const FEATURES_OK: u32 = VIRTIO_CONFIG_S_FEATURES_OK;

fn rng_driver(mem: &GuestMemory) -> Driver<'_> {
    Driver::new(mem, Box::new(Rng::new()))
}

#[test]
fn identifies_the_device() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    assert_eq!(driver.read32(REG_MAGIC), 0x7472_6976);
    assert_eq!(driver.read32(REG_VERSION), 2);
    assert_eq!(driver.read32(REG_DEVICE_ID), 4);
    assert_eq!(driver.read32(REG_VENDOR_ID), VENDOR_ID);
    let features = driver.offered();
    assert_ne!(features & (1 << VIRTIO_F_VERSION_1), 0);
    assert_ne!(features & (1 << VIRTIO_RING_F_EVENT_IDX), 0);
    driver.write32(REG_QUEUE_SEL, 0);
    assert_eq!(driver.read32(REG_QUEUE_NUM_MAX), 64);
    driver.write32(REG_QUEUE_SEL, 1);
    assert_eq!(driver.read32(REG_QUEUE_NUM_MAX), 0, "no second queue");
}

#[test]
fn bad_accesses_are_ignored() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    let mut byte = [0xffu8; 1];
    driver.transport.read(REG_MAGIC, &mut byte);
    assert_eq!(byte, [0]);
    let mut wide = [0xffu8; 8];
    driver.transport.read(REG_MAGIC, &mut wide);
    assert_eq!(wide, [0; 8]);
    let mut word = [0xffu8; 4];
    driver.transport.read(REG_MAGIC + 2, &mut word);
    assert_eq!(word, [0; 4]);
    driver.transport.read(0x1000, &mut word);
    assert_eq!(word, [0; 4]);
    driver.transport.read(u64::MAX, &mut word);
    assert_eq!(word, [0; 4]);
    let mut odd = [0xffu8; 3];
    driver.transport.read(0x100, &mut odd);
    assert_eq!(odd, [0; 3]);
    driver.transport.read(0xffe, &mut wide);
    assert_eq!(wide, [0; 8]);
    driver.transport.write(REG_STATUS, &[1]);
    driver.transport.write(REG_STATUS, &[1, 0, 0, 0, 0, 0, 0, 0]);
    driver.transport.write(REG_STATUS + 1, &[1, 0, 0, 0]);
    driver.transport.write(0x5000, &[1, 0, 0, 0]);
    driver.transport.write(0x100, &[]);
    assert_eq!(driver.read32(STATUS), 0);
    // Notifying a device that was never started, or a queue that does not exist.
    driver.write32(NOTIFY, 0);
    driver.write32(NOTIFY, u32::MAX);
    assert!(!driver.irq_fired());
}

#[test]
fn legacy_driver_is_refused() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    let status = driver.init(!(1 << VIRTIO_F_VERSION_1), 1);
    assert_eq!(status & FEATURES_OK, 0);
    // Without FEATURES_OK, DRIVER_OK does not stick and queue registers are not writable.
    driver.write32(QUEUE_SEL, 0);
    driver.write32(QUEUE_READY, 1);
    assert_eq!(driver.read32(QUEUE_READY), 0);
    driver.write32(STATUS, status | DRIVER_OK);
    assert_eq!(driver.read32(STATUS) & DRIVER_OK, 0);
}

#[test]
fn notify_interrupts_and_ack_clears() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    let status = driver.init(1 << VIRTIO_F_VERSION_1, 1);
    assert_eq!(status & (FEATURES_OK | DRIVER_OK), FEATURES_OK | DRIVER_OK);
    let head = driver.add_chain(0, &[(DATA, 32, true)]);
    driver.notify(0);
    assert_eq!(driver.used(0), vec![(u32::from(head), 32)]);
    assert!(driver.irq_fired());
    assert_eq!(driver.read32(INTERRUPT_STATUS), 1);
    driver.write32(INTERRUPT_ACK, 1);
    assert_eq!(driver.read32(INTERRUPT_STATUS), 0);
    // Nothing new: no interrupt.
    driver.notify(0);
    assert!(!driver.irq_fired());
}

#[test]
fn event_idx_suppresses_interrupts_until_used_event() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    driver.init(u64::MAX, 1);
    driver.set_used_event(0, 1);
    driver.add_chain(0, &[(DATA, 16, true)]);
    driver.notify(0);
    assert_eq!(driver.used(0).len(), 1);
    assert!(!driver.irq_fired(), "the driver asked to hear after entry 1");
    assert_eq!(driver.read32(INTERRUPT_STATUS), 0);
    driver.add_chain(0, &[(DATA, 16, true)]);
    driver.notify(0);
    assert!(driver.irq_fired());
    // The device publishes where it wants the next kick: avail_event = next_avail.
    let avail_event = 0x1000 + 0x800 + 4 + 8 * 16;
    assert_eq!(driver.read_mem(avail_event, 2), 2u16.to_le_bytes());
}

#[test]
fn reset_clears_queues_and_status() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    driver.init(u64::MAX, 1);
    driver.add_chain(0, &[(DATA, 16, true)]);
    driver.notify(0);
    assert!(driver.irq_fired());
    driver.write32(STATUS, 0);
    assert_eq!(driver.read32(STATUS), 0);
    assert_eq!(driver.read32(INTERRUPT_STATUS), 0);
    driver.write32(QUEUE_SEL, 0);
    assert_eq!(driver.read32(QUEUE_READY), 0);
    // A notify after reset is ignored: the device has no queues any more.
    driver.add_chain(0, &[(DATA, 16, true)]);
    driver.notify(0);
    assert_eq!(driver.used(0).len(), 1);
    assert!(!driver.irq_fired());
    // And the device comes back up cleanly.
    let status = driver.init(u64::MAX, 1);
    assert_eq!(status & DRIVER_OK, DRIVER_OK);
    driver.add_chain(0, &[(DATA, 16, true)]);
    driver.notify(0);
    assert_eq!(driver.used(0).len(), 1, "a fresh used ring");
}

#[test]
fn rings_outside_memory_need_reset() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    driver.write32(STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER);
    driver.write32(REG_DRIVER_FEATURES_SEL, 1);
    driver.write32(REG_DRIVER_FEATURES, 1);
    let status = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | FEATURES_OK;
    driver.write32(STATUS, status);
    driver.write32(REG_QUEUE_SEL, 0);
    driver.write32(REG_QUEUE_NUM, 16);
    driver.write32(REG_QUEUE_DESC_LOW, 0x1000);
    driver.write32(REG_QUEUE_AVAIL_LOW, 0x1400);
    driver.write32(REG_QUEUE_USED_HIGH, 0x10); // 64 GiB: no RAM there
    driver.write32(REG_QUEUE_READY, 1);
    driver.write32(STATUS, status | DRIVER_OK);
    assert_ne!(driver.read32(STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    driver.write32(NOTIFY, 0);
    assert!(!driver.irq_fired());
}

#[test]
fn queue_sizes_round_down_to_powers_of_two() {
    assert_eq!(power_of_two_below(0), 1);
    assert_eq!(power_of_two_below(1), 1);
    assert_eq!(power_of_two_below(100), 64);
    assert_eq!(power_of_two_below(256), 256);
    assert_eq!(power_of_two_below(u16::MAX), 32768);
}

#[test]
fn the_window_answers_interrupt_registers_while_a_worker_holds_the_transport() {
    let mem = memory();
    let mut driver = rng_driver(&mem);
    driver.init(1 << VIRTIO_F_VERSION_1, 1);
    driver.add_chain(0, &[(DATA, 32, true)]);
    driver.notify(0);
    assert!(driver.irq_fired());
    let idle = MmioTransport::new(mem.clone(), Box::new(Rng::new()), driver.irq.clone());
    let transport = Arc::new(Mutex::new(std::mem::replace(&mut driver.transport, idle)));
    let mut window = MmioWindow::new(transport.clone());
    // A queue worker in the middle of a long device write.
    let held = transport.lock().unwrap();
    let (done, answered) = std::sync::mpsc::channel();
    let vcpu = std::thread::spawn(move || {
        let mut status = [0u8; 4];
        window.read(INTERRUPT_STATUS, &mut status);
        window.write(INTERRUPT_ACK, &status);
        let mut after = [0u8; 4];
        window.read(INTERRUPT_STATUS, &mut after);
        done.send((u32::from_le_bytes(status), u32::from_le_bytes(after)))
            .unwrap();
        window
    });
    let got = answered.recv_timeout(std::time::Duration::from_secs(10));
    drop(held);
    assert_eq!(
        got,
        Ok((1, 0)),
        "InterruptStatus and InterruptACK waited for the transport's lock"
    );
    // Every other register is the transport's.
    let mut window = vcpu.join().unwrap();
    let mut magic = [0u8; 4];
    window.read(REG_MAGIC, &mut magic);
    assert_eq!(u32::from_le_bytes(magic), MAGIC);
    window.write(REG_STATUS, &0u32.to_le_bytes());
    assert_eq!(
        transport.lock().unwrap().read_register(REG_STATUS),
        0,
        "the reset reached the transport"
    );
}
