//! One thread per vCPU: run the guest, dispatch its port and MMIO accesses to the buses, park
//! while the VM is paused, and report the exits that end the VM.

use crate::devices::bus::Bus;
use crate::exit::{ExitSender, VmExit};
use crate::snapshot::state::VcpuState;
use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

/// What every vCPU thread shares.
#[derive(Clone)]
pub struct VcpuContext {
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub exits: ExitSender,
    pub control: Arc<RunControl>,
}

/// Stop and pause requests to the vCPU threads, and how many of them are parked.
///
/// A request is a flag plus kick signals: the signal gets a thread out of KVM_RUN, the flag
/// tells it why. Kicks repeat until the threads answer, which closes the race with a thread
/// that was just about to enter KVM_RUN when the first kick landed.
#[derive(Default)]
pub struct RunControl {
    stop: AtomicBool,
    pause: AtomicBool,
    parked: Mutex<usize>,
    changed: Condvar,
    /// A snapshot's request: parked vCPUs save their state into their slot.
    capture: Mutex<Capture>,
}

#[derive(Default)]
struct Capture {
    /// The MSRs KVM can save; each vCPU keeps those it can read.
    msr_list: Option<Arc<Vec<u32>>>,
    states: Vec<Option<Result<VcpuState, String>>>,
}

impl RunControl {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub fn paused(&self) -> bool {
        self.pause.load(Ordering::Acquire)
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every vCPU to park and returns once all `threads` are parked (or have ended).
    pub fn pause(&self, threads: &[JoinHandle<()>]) {
        self.pause.store(true, Ordering::Release);
        let mut parked = self.parked();
        loop {
            let running = threads.iter().filter(|t| !t.is_finished()).count();
            if *parked >= running {
                return;
            }
            for thread in threads.iter().filter(|t| !t.is_finished()) {
                let _ = thread.kill(kick_signal());
            }
            parked = self
                .changed
                .wait_timeout(parked, Duration::from_micros(500))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        self.pause.store(false, Ordering::Release);
        let _parked = self.parked();
        self.changed.notify_all();
    }

    /// Pauses every vCPU and has each save its state; returns the states in vCPU order.
    pub fn pause_and_capture(
        &self,
        threads: &[JoinHandle<()>],
        msr_list: Vec<u32>,
    ) -> Vec<Result<VcpuState, String>> {
        {
            let mut capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
            capture.msr_list = Some(Arc::new(msr_list));
            capture.states = threads.iter().map(|_| None).collect();
        }
        self.pause(threads);
        // vCPUs parked before the request capture when woken.
        let mut parked = self.parked();
        self.changed.notify_all();
        loop {
            let done = {
                let capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
                threads
                    .iter()
                    .zip(&capture.states)
                    .all(|(t, s)| s.is_some() || t.is_finished())
            };
            if done {
                break;
            }
            parked = self
                .changed
                .wait_timeout(parked, Duration::from_millis(1))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(parked);
        let mut capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        capture.msr_list = None;
        std::mem::take(&mut capture.states)
            .into_iter()
            .map(|s| s.unwrap_or_else(|| Err("the vCPU thread had ended".into())))
            .collect()
    }

    /// Saves this vCPU's state if a snapshot asked and it has not yet.
    fn capture_if_asked(&self, id: u8, vcpu: &VcpuFd) {
        let mut capture = self.capture.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = capture.msr_list.clone() else {
            return;
        };
        if capture.states.get(usize::from(id)).is_some_and(|s| s.is_none()) {
            let msrs: Vec<u32> = list
                .iter()
                .copied()
                .filter(|&index| crate::snapshot::state::msr_readable(vcpu, index))
                .collect();
            capture.states[usize::from(id)] =
                Some(VcpuState::capture(vcpu, &msrs).map_err(|e| e.to_string()));
        }
    }

    /// Parks the calling vCPU thread while a pause lasts (and the VM is not stopping).
    fn park(&self, id: u8, vcpu: &VcpuFd) {
        self.capture_if_asked(id, vcpu);
        let mut parked = self.parked();
        *parked += 1;
        self.changed.notify_all();
        // Tell a kvmclock guest it was stopped on purpose, so its watchdogs do not fire on
        // resume. Guests without kvmclock make this fail, which is fine.
        let _ = vcpu.kvmclock_ctrl();
        while self.paused() && !self.stopping() {
            parked = self.changed.wait(parked).unwrap_or_else(|p| p.into_inner());
            drop(parked);
            self.capture_if_asked(id, vcpu);
            parked = self.parked();
        }
        *parked -= 1;
        self.changed.notify_all();
    }

    /// Ends every vCPU thread: flag, then kicks until each has returned.
    pub fn stop_all(&self, threads: Vec<JoinHandle<()>>) {
        self.stop.store(true, Ordering::Release);
        {
            let _parked = self.parked();
            self.changed.notify_all();
        }
        for thread in threads {
            while !thread.is_finished() {
                let _ = thread.kill(kick_signal());
                std::thread::sleep(Duration::from_micros(200));
            }
            let _ = thread.join();
        }
    }
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

fn run(id: u8, mut vcpu: VcpuFd, ctx: VcpuContext) {
    crate::seccomp::install_or_exit(crate::seccomp::ThreadKind::Vcpu);
    while !ctx.control.stopping() {
        let step = if ctx.control.paused() {
            complete_pending_io(id, &mut vcpu, &ctx).map(|()| ctx.control.park(id, &vcpu))
        } else {
            run_once(id, &mut vcpu, &ctx).map(|_| ())
        };
        if let Err(end) = step {
            let _ = ctx.exits.send(end);
            return;
        }
    }
}

/// Finishes the port or MMIO access the last exit handed to the devices before the vCPU parks.
///
/// KVM completes such an access (the value of an IN or MMIO read into its register, and on
/// hardware virtualization even an OUT's step past the instruction) only when KVM_RUN is next
/// entered. A snapshot taken in between would save the vCPU before the instruction and replay
/// the access on restore: a byte printed twice, a read-to-clear register read twice. KVM_RUN
/// with `immediate_exit` set completes it and returns at once.
fn complete_pending_io(id: u8, vcpu: &mut VcpuFd, ctx: &VcpuContext) -> Result<(), VmExit> {
    vcpu.set_kvm_immediate_exit(1);
    // A string instruction (rep outsb) may need the devices again before it is complete; each
    // round hands over its next piece, and the EINTR comes once nothing is left.
    let result = loop {
        match run_once(id, vcpu, ctx) {
            Ok(true) => continue,
            done => break done.map(|_| ()),
        }
    };
    vcpu.set_kvm_immediate_exit(0);
    result
}

/// One KVM_RUN and the exit it returns: `Ok(true)` when an exit was handled, `Ok(false)` when
/// KVM_RUN was interrupted (a kick, or `immediate_exit`).
fn run_once(id: u8, vcpu: &mut VcpuFd, ctx: &VcpuContext) -> Result<bool, VmExit> {
    match vcpu.run() {
        Ok(exit) => handle(id, exit, ctx)
            .map(|()| true)
            .map_err(|end| end.into_exit(id, vcpu)),
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Ok(false),
        Err(e) => Err(kvm_run_failed(id, e)),
    }
}

fn kvm_run_failed(id: u8, e: kvm_ioctls::Error) -> VmExit {
    VmExit::VcpuFailed {
        vcpu: id,
        error: format!("KVM_RUN failed: {e}"),
    }
}

/// Why a vCPU stops running: a VM exit, or a triple fault (whose report needs the vCPU).
enum End {
    Exit(VmExit),
    TripleFault,
}

impl End {
    fn into_exit(self, id: u8, vcpu: &VcpuFd) -> VmExit {
        match self {
            End::Exit(exit) => exit,
            End::TripleFault => {
                // A triple fault leaves no trace in the guest; where the vCPU stood is the only lead.
                eprintln!("vessel-vmm: vCPU {id} triple fault: {}", cpu_state(vcpu));
                VmExit::Reset { how: "triple fault" }
            }
        }
    }
}

/// Dispatches one exit to the buses; `Err` when it ends the VM.
fn handle(id: u8, exit: VcpuExit, ctx: &VcpuContext) -> Result<(), End> {
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
        VcpuExit::Shutdown => return Err(End::TripleFault),
        VcpuExit::SystemEvent(kind, _) => {
            return Err(End::Exit(match kind {
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
            }))
        }
        VcpuExit::FailEntry(reason, _) => {
            return Err(End::Exit(VmExit::VcpuFailed {
                vcpu: id,
                error: format!("the CPU refused to enter the guest (hardware entry failure {reason:#x})"),
            }))
        }
        VcpuExit::InternalError => {
            return Err(End::Exit(VmExit::VcpuFailed {
                vcpu: id,
                error: "KVM internal error (instruction emulation failed)".into(),
            }))
        }
        other => {
            return Err(End::Exit(VmExit::VcpuFailed {
                vcpu: id,
                error: format!("unexpected exit {other:?}"),
            }))
        }
    }
    Ok(())
}

/// The registers that locate a fault (where the vCPU was, its paging and its mode), one line.
fn cpu_state(vcpu: &VcpuFd) -> String {
    // The architectural reset vector: where an INIT leaves a vCPU.
    const RESET_CS: u16 = 0xf000;
    const RESET_RIP: u64 = 0xfff0;
    let regs = vcpu.get_regs();
    let sregs = vcpu.get_sregs();
    let mut line = match &regs {
        Ok(r) => format!("rip={:#x} rsp={:#x} rflags={:#x}", r.rip, r.rsp, r.rflags),
        Err(e) => format!("registers unreadable ({e})"),
    };
    match &sregs {
        Ok(s) => line.push_str(&format!(
            " cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            s.cs.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        )),
        Err(e) => line.push_str(&format!(" special registers unreadable ({e})")),
    }
    if let (Ok(r), Ok(s)) = (&regs, &sregs) {
        if r.rip == RESET_RIP && s.cs.selector == RESET_CS {
            line.push_str(
                " (the reset state: KVM on AMD re-initialises a vCPU that shut down, so where it \
                 faulted is lost)",
            );
        }
    }
    line
}
