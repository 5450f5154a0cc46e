//! Interrupt lines from devices to the guest's in-kernel IRQ chip.
//!
//! Each line is an eventfd registered with KVM as an irqfd for one GSI: a device raises its
//! interrupt by writing the eventfd, from any thread, without a trip through the vCPU loop.

use std::io;
use std::sync::Arc;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// An edge-triggered interrupt line (cheap to clone; clones share the eventfd).
#[derive(Clone, Debug)]
pub struct IrqLine {
    gsi: u32,
    event: Arc<EventFd>,
}

impl IrqLine {
    pub fn new(gsi: u32) -> io::Result<Self> {
        Ok(Self {
            gsi,
            event: Arc::new(EventFd::new(EFD_NONBLOCK)?),
        })
    }

    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// The eventfd to register with KVM (`register_irqfd`), or for a test to read.
    pub fn event(&self) -> &EventFd {
        &self.event
    }

    /// Raises the interrupt.
    pub fn trigger(&self) -> io::Result<()> {
        self.event.write(1)
    }
}

impl vm_superio::Trigger for IrqLine {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        IrqLine::trigger(self)
    }
}
