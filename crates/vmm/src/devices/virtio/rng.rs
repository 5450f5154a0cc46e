//! virtio-rng: the guest's hwrng, fed from the host's getrandom(2).

use super::{
    check_queue_count, drain_queue, ActivateError, VirtioDevice, VirtioInterrupt, BASE_FEATURES, TYPE_RNG,
};
use crate::GuestMemory;
use std::io::{self, Write};
use virtio_queue::{DescriptorChain, Queue, Writer};

const QUEUE_SIZE: u16 = 64;
/// Bytes handed out per buffer at most: the guest asks for entropy in small reads, and a huge
/// buffer must not keep the vCPU thread busy.
const MAX_PER_BUFFER: usize = 64 * 1024;

#[derive(Default)]
pub struct Rng {
    active: Option<(GuestMemory, Queue)>,
    buf: Vec<u8>,
}

impl Rng {
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        BASE_FEATURES
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(
        &mut self,
        mem: GuestMemory,
        mut queues: Vec<Queue>,
        _interrupt: VirtioInterrupt,
    ) -> Result<(), ActivateError> {
        check_queue_count(TYPE_RNG, &queues, 1)?;
        self.active = Some((mem, queues.remove(0)));
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> bool {
        let (Some((mem, queue)), 0) = (self.active.as_mut(), index) else {
            return false;
        };
        let buf = &mut self.buf;
        drain_queue(queue, mem, |chain| Some(fill(buf, mem, chain)))
    }

    fn reset(&mut self) {
        self.active = None;
    }

    fn saved_queues(&self) -> Option<Vec<virtio_queue::QueueState>> {
        Some(self.active.iter().map(|(_, queue)| queue.state()).collect())
    }
}

/// Fills the chain's writable buffers; returns the bytes written.
fn fill(buf: &mut Vec<u8>, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> u32 {
    let Ok(mut writer) = Writer::new(mem, chain) else {
        return 0;
    };
    let n = writer.available_bytes().min(MAX_PER_BUFFER);
    buf.resize(n, 0);
    if getrandom(buf).is_err() || writer.write_all(buf).is_err() {
        return 0;
    }
    n as u32
}

fn getrandom(mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own.
        let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
            continue;
        }
        buf = &mut buf[n as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::{memory, Driver, DATA};

    #[test]
    fn fills_buffers() {
        let mem = memory();
        let mut driver = Driver::new(&mem, Box::new(Rng::new()));
        driver.init(u64::MAX, 1);
        let head = driver.add_chain(0, &[(DATA, 64, true), (DATA + 0x100, 64, true)]);
        driver.notify(0);
        assert_eq!(driver.used(0), vec![(u32::from(head), 128)]);
        assert_ne!(driver.read_mem(DATA, 64), vec![0; 64]);
        assert_ne!(driver.read_mem(DATA + 0x100, 64), vec![0; 64]);
        assert!(driver.irq_fired());
        // A device-readable buffer gets nothing written.
        let head = driver.add_chain(0, &[(DATA + 0x200, 64, false)]);
        driver.notify(0);
        assert_eq!(driver.used(0)[1], (u32::from(head), 0));
        assert_eq!(driver.read_mem(DATA + 0x200, 64), vec![0; 64]);
    }
}
