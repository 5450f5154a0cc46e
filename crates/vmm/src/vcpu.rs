//! One thread per vCPU: run the guest, dispatch its port and MMIO accesses to the buses, and
//! report the exits that end the VM.

use crate::devices::bus::Bus;
use crate::exit::{ExitSender, VmExit};
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exits: ExitSender,
    /// Set when the VM is ending; a kick signal then gets each thread out of KVM_RUN.
    pub stop: Arc<AtomicBool>,
}

/// The signal that interrupts KVM_RUN so a vCPU thread sees `stop`.
fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn install_kick_handler() -> std::io::Result<()> {
    static INSTALL: Once = Once::new();
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // The handler does nothing: its only job is to make KVM_RUN return EINTR.
        result = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// Starts vCPU `id` on a thread of its own.
pub fn spawn(id: u8, vcpu: VcpuFd, ctx: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    install_kick_handler()?;
    std::thread::Builder::new()
        .name(format!("vcpu{id}"))
        .spawn(move || run(id, vcpu, ctx))
}

/// Kicks vCPU threads out of KVM_RUN until all have returned. `stop` must already be set.
pub fn stop_all(threads: Vec<JoinHandle<()>>) {
    for thread in threads {
        // A kick that lands just before the thread enters KVM_RUN is lost, so keep kicking.
        while !thread.is_finished() {
            let _ = thread.kill(kick_signal());
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        let _ = thread.join();
    }
}

fn run(id: u8, mut vcpu: VcpuFd, ctx: VcpuContext) {
    let fail = |error: String| {
        let _ = ctx.exits.send(VmExit::VcpuFailed { vcpu: id, error });
    };
    while !ctx.stop.load(Ordering::Acquire) {
        let exit = match vcpu.run() {
            Ok(exit) => exit,
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => continue,
            Err(e) => return fail(format!("KVM_RUN failed: {e}")),
        };
        match exit {
            VcpuExit::IoIn(port, data) => {
                // Reads of ports nobody answers float high, as on a PC bus.
                if !ctx.pio.read(port.into(), data) {
                    data.fill(0xff);
                }
            }
            VcpuExit::IoOut(port, data) => {
                ctx.pio.write(port.into(), data);
            }
            VcpuExit::MmioRead(addr, data) => {
                if !ctx.mmio.read(addr, data) {
                    data.fill(0xff);
                }
            }
            VcpuExit::MmioWrite(addr, data) => {
                ctx.mmio.write(addr, data);
            }
            // With the in-kernel IRQ chip a halted vCPU waits in KVM; an exit here is only a wake-up.
            VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => {}
            VcpuExit::Shutdown => {
                let _ = ctx.exits.send(VmExit::Reset { how: "triple fault" });
                return;
            }
            VcpuExit::SystemEvent(kind, _) => {
                let exit = match kind {
                    KVM_SYSTEM_EVENT_SHUTDOWN => VmExit::PowerOff,
                    KVM_SYSTEM_EVENT_RESET => VmExit::Reset {
                        how: "system reset event",
                    },
                    KVM_SYSTEM_EVENT_CRASH => VmExit::VcpuFailed {
                        vcpu: id,
                        error: "guest crashed".into(),
                    },
                    other => VmExit::VcpuFailed {
                        vcpu: id,
                        error: format!("unknown system event {other}"),
                    },
                };
                let _ = ctx.exits.send(exit);
                return;
            }
            VcpuExit::FailEntry(reason, _) => {
                return fail(format!(
                    "the CPU refused to enter the guest (hardware entry failure {reason:#x})"
                ))
            }
            VcpuExit::InternalError => {
                return fail("KVM internal error (instruction emulation failed)".into())
            }
            other => return fail(format!("unexpected exit {other:?}")),
        }
    }
}
