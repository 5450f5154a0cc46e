//! What happens when a filter traps a call: one line on stderr naming the thread kind and the
//! system call's number, then death by SIGSYS. The handler uses only calls every list allows
//! (write, rt_sigaction, getpid, gettid, tgkill) and no allocation or lock.

use super::ThreadKind;
use std::cell::Cell;

thread_local! {
    /// The calling thread's kind once it installed its filter (read by the signal handler).
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
}

pub(super) fn set_thread_kind(kind: ThreadKind) {
    KIND.with(|k| k.set(Some(kind)));
}

/// Offset of `si_syscall` in a SIGSYS `siginfo_t` on x86-64 (after signo, errno, code, padding
/// and `si_call_addr`).
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; si_syscall is an int at this offset.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    let kind = KIND.with(|k| k.get()).map_or("unfiltered", ThreadKind::name);
    let mut line = Line::default();
    line.push(b"vessel-vmm: seccomp: a ");
    line.push(kind.as_bytes());
    line.push(b" thread made forbidden system call ");
    line.push_number(nr);
    line.push(b"; killing the VMM\n");
    // SAFETY: writes a buffer this frame owns to stderr; resets SIGSYS to its default action
    // (SA_NODEFER left it unblocked) and sends it to this thread, which ends the process.
    unsafe {
        libc::write(2, line.buf.as_ptr().cast(), line.len);
        libc::signal(libc::SIGSYS, libc::SIG_DFL);
        libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), libc::SIGSYS);
    }
}

/// A fixed buffer, so that the handler never allocates.
struct Line {
    buf: [u8; 128],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            buf: [0; 128],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        let take = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + take].copy_from_slice(&bytes[..take]);
        self.len += take;
    }

    fn push_number(&mut self, n: i32) {
        let mut digits = [0u8; 12];
        let mut at = digits.len();
        let mut rest = i64::from(n).unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        if n < 0 {
            self.push(b"-");
        }
        self.push(&digits[at..]);
    }
}

/// Installs the SIGSYS handler (SA_NODEFER, so that it can die of SIGSYS itself).
pub(super) fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the fields set are the handler (an extern "C" fn with
    // the SA_SIGINFO signature), its flags and an empty mask.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn numbers_are_written_without_allocation() {
        let mut line = Line::default();
        line.push(b"nr ");
        line.push_number(59);
        line.push(b" ");
        line.push_number(-1);
        line.push(b" ");
        line.push_number(0);
        assert_eq!(&line.buf[..line.len], b"nr 59 -1 0");
    }
}
