//! Hand-made 64-bit guests for tests and benchmarks: a few instructions wrapped in an ELF that
//! `vessel-vmm --kernel` loads like a vmlinux. They run anywhere KVM does, kvm-pvm included,
//! because they stay in the low gigabyte the boot page tables identity-map.

use crate::arch::layout::{ACPI_S5_SLEEP_TYPE, COM1_PORT, HIGH_MEMORY_ADDR, I8042_COMMAND_PORT};

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;

/// `mov edx, port`
fn set_port(port: u16) -> Vec<u8> {
    let mut code = vec![0xba];
    code.extend(u32::from(port).to_le_bytes());
    code
}

/// Writes `text` to COM1.
pub fn print(text: &[u8]) -> Vec<u8> {
    let mut code = set_port(COM1_PORT);
    for &byte in text {
        code.extend([0xb0, byte, 0xee]); // mov al, byte; out dx, al
    }
    code
}

/// ACPI S5 through the sleep control register, then halt.
pub fn power_off() -> Vec<u8> {
    let mut code = set_port(crate::arch::layout::ACPI_SLEEP_CONTROL_PORT);
    code.extend([0xb0, (ACPI_S5_SLEEP_TYPE << 2) | (1 << 5), 0xee]);
    code.extend(halt());
    code
}

/// Pulses the reset line through the keyboard controller, then halt.
pub fn reset() -> Vec<u8> {
    let mut code = set_port(I8042_COMMAND_PORT);
    code.extend([0xb0, 0xfe, 0xee]);
    code.extend(halt());
    code
}

/// Loads an empty IDT and raises #UD: the #UD, the #GP it turns into and the double fault all
/// find no gate, which is a triple fault (the CPU shuts down). 64-bit code (`elf_kernel`).
pub fn triple_fault() -> Vec<u8> {
    // push 0; push 0 (a 16-byte zero IDT descriptor: limit 0); lidt [rsp]; ud2
    vec![0x6a, 0x00, 0x6a, 0x00, 0x0f, 0x01, 0x1c, 0x24, 0x0f, 0x0b]
}

/// Counts on COM1 forever: each byte is the previous plus one (mod 256), starting at 1, so the
/// first byte after a pause or a restore tells whether the guest went on exactly where it was.
pub fn serial_counter() -> Vec<u8> {
    // xor ebx, ebx; mov edx, COM1; loop: inc ebx; mov al, bl; out dx, al; jmp loop
    let mut code = vec![0x31, 0xdb];
    code.extend(set_port(COM1_PORT));
    code.extend([0xff, 0xc3, 0x88, 0xd8, 0xee, 0xeb, 0xf9]);
    code
}

/// Polls COM1's line status until a byte has arrived (it leaves it unread).
pub fn wait_for_serial_input() -> Vec<u8> {
    let mut code = set_port(COM1_PORT + 5);
    code.extend([0xec, 0xa8, 0x01, 0x74, 0xfb]); // again: in al, dx; test al, 1 (data ready); jz again
    code
}

/// Polls the ACPI event device's status register until the power-button bit is set (reading clears
/// the events): how a hand-made guest, which has no interrupt handler, sees its power button.
pub fn wait_for_power_button() -> Vec<u8> {
    let mut code = set_port(crate::arch::layout::ACPI_GED_STATUS_PORT);
    code.extend([0xec, 0xa8, 0x01, 0x74, 0xfb]); // again: in al, dx; test al, 1 (power button); jz again
    code
}

/// Loops forever without exits.
pub fn spin() -> Vec<u8> {
    vec![0xeb, 0xfe]
}

fn halt() -> Vec<u8> {
    vec![0xf4, 0xeb, 0xfd] // hlt; jmp back to hlt
}

/// An ELF64 executable whose one segment holds `code` at 1 MiB, entered there in long mode.
pub fn elf_kernel(code: &[u8]) -> Vec<u8> {
    build_elf(code, false)
}

/// Like `elf_kernel`, plus the Xen PVH note, so `code` is entered in 32-bit protected mode
/// with EBX pointing at `hvm_start_info`.
pub fn pvh_elf_kernel(code: &[u8]) -> Vec<u8> {
    build_elf(code, true)
}

/// `mov al, [ebx]`: the first byte PVH's EBX points at (the start-info magic's low byte, 0x78).
pub fn load_byte_at_ebx() -> Vec<u8> {
    vec![0x8a, 0x03]
}

/// Reads one byte from `port` into AL.
pub fn read_port(port: u16) -> Vec<u8> {
    let mut code = set_port(port);
    code.push(0xec); // in al, dx
    code
}

/// Writes AL to COM1.
pub fn print_al() -> Vec<u8> {
    let mut code = set_port(COM1_PORT);
    code.push(0xee);
    code
}

const PVH_NOTE_SIZE: usize = 20;
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn build_elf(code: &[u8], pvh: bool) -> Vec<u8> {
    let phnum = if pvh { 2 } else { 1 };
    let note_offset = (EHDR_SIZE + PHDR_SIZE * phnum) as u64;
    let offset = note_offset + if pvh { PVH_NOTE_SIZE as u64 } else { 0 };
    let entry = HIGH_MEMORY_ADDR + offset;
    let size = offset + code.len() as u64;
    let mut elf = Vec::with_capacity(size as usize);
    elf.extend(b"\x7fELF");
    elf.extend([2, 1, 1, 0]); // 64-bit, little endian, ELF version 1, System V ABI
    elf.extend([0; 8]);
    elf.extend(2u16.to_le_bytes()); // ET_EXEC
    elf.extend(62u16.to_le_bytes()); // EM_X86_64
    elf.extend(1u32.to_le_bytes());
    elf.extend(entry.to_le_bytes());
    elf.extend((EHDR_SIZE as u64).to_le_bytes()); // program headers follow the ELF header
    elf.extend(0u64.to_le_bytes()); // no section headers
    elf.extend(0u32.to_le_bytes());
    for half in [EHDR_SIZE as u16, PHDR_SIZE as u16, phnum as u16, 64, 0, 0] {
        elf.extend(half.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    elf.extend(1u32.to_le_bytes()); // PT_LOAD
    elf.extend(7u32.to_le_bytes()); // read, write, execute
    for word in [0, HIGH_MEMORY_ADDR, HIGH_MEMORY_ADDR, size, size, 0x1000] {
        elf.extend(word.to_le_bytes()); // offset, vaddr, paddr, filesz, memsz, align
    }
    if pvh {
        elf.extend(4u32.to_le_bytes()); // PT_NOTE
        elf.extend(4u32.to_le_bytes()); // read
        let note = PVH_NOTE_SIZE as u64;
        for word in [note_offset, 0, 0, note, note, 4] {
            elf.extend(word.to_le_bytes());
        }
        for word in [4, 4, XEN_ELFNOTE_PHYS32_ENTRY] {
            elf.extend(u32::to_le_bytes(word)); // name size, descriptor size, type
        }
        elf.extend(b"Xen\0");
        elf.extend((entry as u32).to_le_bytes());
    }
    elf.extend(code);
    elf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::boot::{load_kernel, EntryMode};
    use vm_memory::Bytes;

    #[test]
    fn the_elf_loads_as_a_kernel_at_one_mebibyte() {
        let code = [print(b"x"), power_off()].concat();
        let path = std::env::temp_dir().join(format!("vessel-handmade-{}", std::process::id()));
        std::fs::write(&path, elf_kernel(&code)).unwrap();
        let mem = crate::memory::create(32, 1).unwrap();
        let kernel = load_kernel(&mem, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(kernel.mode, EntryMode::Linux64);
        assert_eq!(kernel.entry.0, HIGH_MEMORY_ADDR + 120);
        let mut loaded = vec![0u8; code.len()];
        mem.read_slice(&mut loaded, kernel.entry).unwrap();
        assert_eq!(loaded, code);
        std::fs::write(&path, pvh_elf_kernel(&code)).unwrap();
        let pvh = load_kernel(&mem, &path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            (pvh.mode, pvh.entry.0),
            (EntryMode::Pvh, HIGH_MEMORY_ADDR + 176 + 20)
        );
    }
}
