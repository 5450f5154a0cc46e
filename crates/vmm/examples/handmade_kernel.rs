//! Writes a hand-made guest kernel (an ELF vessel-vmm boots like a vmlinux, on any /dev/kvm) for scripts
//! and benchmarks: `handmade_kernel OUT halt` prints "up" and halts its vCPU (an idle guest);
//! `handmade_kernel OUT hello` prints "hello" and powers off.

use vessel_vmm::handmade::{elf_kernel, power_off, print};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(out), Some(kind)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: handmade_kernel OUT halt|hello");
        std::process::exit(2);
    };
    let code = match kind.as_str() {
        // hlt with interrupts off: the vCPU sleeps in the VMM until the VM ends.
        "halt" => [print(b"up\n"), vec![0xf4, 0xeb, 0xfd]].concat(),
        "hello" => [print(b"hello\n"), power_off()].concat(),
        other => {
            eprintln!("handmade_kernel: unknown kind {other:?} (halt or hello)");
            std::process::exit(2);
        }
    };
    if let Err(e) = std::fs::write(out, elf_kernel(&code)) {
        eprintln!("handmade_kernel: {out}: {e}");
        std::process::exit(1);
    }
}
