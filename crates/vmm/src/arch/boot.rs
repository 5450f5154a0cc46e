//! Loading a Linux kernel and initramfs into guest memory and writing the boot information the
//! kernel reads: the zero page (64-bit boot protocol) or `hvm_start_info` (PVH).

use super::layout::*;
use crate::GuestMemory;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{bzimage::BzImage, KernelLoader, KernelLoaderResult};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
const HDRS_MAGIC: u32 = 0x5372_6448;
const LOADER_UNDEFINED: u8 = 0xff;
const PVH_START_MAGIC: u32 = 0x336e_c578;
/// The 64-bit entry point of a bzImage is 0x200 bytes into its protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Kernels that name no initrd limit (boot protocol < 2.03) accept one below 2 GiB.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x7fff_ffff;

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error("Cannot read kernel {path}: {source}")]
    ReadKernel { path: PathBuf, source: std::io::Error },
    #[error("Kernel {path} is not a kernel: it is neither an ELF vmlinux nor a bzImage")]
    NotAKernel { path: PathBuf },
    #[error("Cannot load kernel {path}: {cause} (is guest memory large enough?)")]
    LoadKernel { path: PathBuf, cause: String },
    #[error("Cannot read initramfs {path}: {source}")]
    ReadInitrd { path: PathBuf, source: std::io::Error },
    #[error("Initramfs {path} ({size} bytes) does not fit in guest memory below {limit:#x} after the kernel; give the VM more memory")]
    InitrdTooBig { path: PathBuf, size: u64, limit: u64 },
    #[error("Kernel command line is {len} bytes; the limit is {max}")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("Kernel command line contains a NUL byte")]
    CmdlineNul,
    #[error("Cannot write boot information to guest memory: {0}")]
    WriteGuest(String),
}

/// How the vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with identity-mapped paging, RSI = zero page (Linux 64-bit boot protocol).
    Linux64,
    /// 32-bit protected mode without paging, EBX = hvm_start_info (PVH).
    Pvh,
}

/// A kernel in guest memory, ready for its boot information.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub mode: EntryMode,
    /// The first byte after the kernel image.
    pub end: u64,
    /// The bzImage's setup header, which goes into the zero page.
    setup_header: Option<setup_header>,
}

/// Where the initramfs landed.
#[derive(Debug, Clone, Copy)]
pub struct Initrd {
    pub addr: GuestAddress,
    pub size: u64,
}

/// Loads an ELF vmlinux (PVH entry when the ELF note announces one) or a bzImage.
pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, BootError> {
    let read_err = |source| BootError::ReadKernel {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut magic = [0u8; 4];
    let is_elf = file.read(&mut magic).map_err(read_err)? == 4 && magic == *b"\x7fELF";
    let load_err = |e: linux_loader::loader::Error| BootError::LoadKernel {
        path: path.to_owned(),
        cause: e.to_string(),
    };
    let high = Some(GuestAddress(HIGH_MEMORY_ADDR));
    if is_elf {
        let result = Elf::load(mem, None, &mut file, high).map_err(load_err)?;
        return Ok(match result.pvh_boot_cap {
            PvhBootCapability::PvhEntryPresent(entry) => loaded(result, entry, EntryMode::Pvh),
            _ => loaded(result, result.kernel_load, EntryMode::Linux64),
        });
    }
    match BzImage::load(mem, None, &mut file, high) {
        Ok(result) => {
            let entry = GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET);
            Ok(loaded(result, entry, EntryMode::Linux64))
        }
        Err(linux_loader::loader::Error::Bzimage(linux_loader::loader::bzimage::Error::InvalidBzImage)) => {
            Err(BootError::NotAKernel {
                path: path.to_owned(),
            })
        }
        Err(e) => Err(load_err(e)),
    }
}

fn loaded(result: KernelLoaderResult, entry: GuestAddress, mode: EntryMode) -> LoadedKernel {
    LoadedKernel {
        entry,
        mode,
        end: result.kernel_end,
        setup_header: result.setup_header,
    }
}

/// The end of the RAM range the kernel's early code can reach (below the MMIO hole).
fn low_ram_end(mem: &GuestMemory) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().0 + r.len())
        .filter(|&end| end <= MMIO_GAP_START)
        .max()
        .unwrap_or(0)
}

/// Places the initramfs as high as the kernel allows, page aligned, above the kernel.
pub fn load_initrd(mem: &GuestMemory, kernel: &LoadedKernel, path: &Path) -> Result<Initrd, BootError> {
    let read_err = |source| BootError::ReadInitrd {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let addr_max = kernel
        .setup_header
        .filter(|h| h.initrd_addr_max != 0)
        .map_or(DEFAULT_INITRD_ADDR_MAX, |h| u64::from(h.initrd_addr_max));
    let limit = low_ram_end(mem).min(addr_max + 1);
    let too_big = || BootError::InitrdTooBig {
        path: path.to_owned(),
        size,
        limit,
    };
    let addr = limit.checked_sub(size).ok_or_else(too_big)? & !0xfff;
    if addr < kernel.end {
        return Err(too_big());
    }
    mem.read_exact_volatile_from(GuestAddress(addr), &mut file, size as usize)
        .map_err(|e| BootError::ReadInitrd {
            path: path.to_owned(),
            source: std::io::Error::other(e.to_string()),
        })?;
    Ok(Initrd {
        addr: GuestAddress(addr),
        size,
    })
}

/// Real-mode code at the reset vector: write the ACPI reset value to the reset register, halt.
fn reset_vector_stub() -> [u8; 9] {
    let [port_lo, port_hi] = ACPI_RESET_PORT.to_le_bytes();
    // mov al, value; mov dx, port; out dx, al; hlt; jmp back to hlt
    [
        0xb0,
        ACPI_RESET_VALUE,
        0xba,
        port_lo,
        port_hi,
        0xee,
        0xf4,
        0xeb,
        0xfd,
    ]
}

/// Installs the reset-vector stub, the VMM's one piece of firmware.
pub fn write_reset_vector(mem: &GuestMemory) -> Result<(), BootError> {
    mem.write_slice(&reset_vector_stub(), GuestAddress(RESET_VECTOR_ADDR))
        .map_err(|e| BootError::WriteGuest(e.to_string()))
}

/// Writes the NUL-terminated command line at `CMDLINE_ADDR`; returns its length without the NUL.
pub fn write_cmdline(mem: &GuestMemory, cmdline: &str) -> Result<usize, BootError> {
    if cmdline.contains('\0') {
        return Err(BootError::CmdlineNul);
    }
    if cmdline.len() >= CMDLINE_MAX {
        return Err(BootError::CmdlineTooLong {
            len: cmdline.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_ADDR))
        .map_err(|e| BootError::WriteGuest(e.to_string()))?;
    Ok(cmdline.len())
}

/// The guest's physical memory map: RAM, and the reserved BIOS area holding the ACPI tables.
pub fn memory_map(mem: &GuestMemory) -> Vec<(u64, u64, u32)> {
    let mut map = vec![
        (0, EBDA_ADDR, E820_RAM),
        (ACPI_RSDP_ADDR, BIOS_AREA_END - ACPI_RSDP_ADDR, E820_RESERVED),
    ];
    for region in mem.iter() {
        let (start, end) = (
            region.start_addr().0.max(HIGH_MEMORY_ADDR),
            region.start_addr().0 + region.len(),
        );
        if end > start {
            map.push((start, end - start, E820_RAM));
        }
    }
    map
}

/// Writes the zero page (or PVH start info) that tells the kernel about memory, command line,
/// initramfs and the ACPI RSDP.
pub fn write_boot_info(
    mem: &GuestMemory,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
    rsdp: u64,
) -> Result<(), BootError> {
    let write_err = |e: linux_loader::configurator::Error| BootError::WriteGuest(e.to_string());
    match kernel.mode {
        EntryMode::Linux64 => {
            let params = zero_page(mem, kernel, cmdline_len, initrd, rsdp);
            mem.write_obj(params, GuestAddress(ZERO_PAGE_ADDR))
                .map_err(|e| BootError::WriteGuest(e.to_string()))
        }
        EntryMode::Pvh => {
            let mut info = hvm_start_info {
                magic: PVH_START_MAGIC,
                version: 1,
                cmdline_paddr: CMDLINE_ADDR,
                rsdp_paddr: rsdp,
                memmap_paddr: PVH_MEMMAP_ADDR,
                ..Default::default()
            };
            let map: Vec<hvm_memmap_table_entry> = memory_map(mem)
                .into_iter()
                .map(|(addr, size, type_)| hvm_memmap_table_entry {
                    addr,
                    size,
                    type_,
                    reserved: 0,
                })
                .collect();
            info.memmap_entries = map.len() as u32;
            if initrd.is_some() {
                info.nr_modules = 1;
                info.modlist_paddr = PVH_MODLIST_ADDR;
            }
            let mut params = BootParams::new(&info, GuestAddress(PVH_INFO_ADDR));
            params.set_sections(&map, GuestAddress(PVH_MEMMAP_ADDR));
            if let Some(initrd) = initrd {
                let module = hvm_modlist_entry {
                    paddr: initrd.addr.0,
                    size: initrd.size,
                    ..Default::default()
                };
                params.set_modules(&[module], GuestAddress(PVH_MODLIST_ADDR));
            }
            PvhBootConfigurator::write_bootparams::<GuestMemory>(&params, mem).map_err(write_err)
        }
    }
}

fn zero_page(
    mem: &GuestMemory,
    kernel: &LoadedKernel,
    cmdline_len: usize,
    initrd: Option<Initrd>,
    rsdp: u64,
) -> boot_params {
    let mut params = boot_params::default();
    if let Some(header) = kernel.setup_header {
        params.hdr = header;
    } else {
        // An ELF vmlinux brings no setup header: say what a bzImage would have said.
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.boot_flag = BOOT_FLAG_MAGIC;
    params.hdr.header = HDRS_MAGIC;
    params.hdr.type_of_loader = LOADER_UNDEFINED;
    params.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.hdr.ramdisk_size = initrd.size as u32;
    }
    params.acpi_rsdp_addr = rsdp;
    let map = memory_map(mem);
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(&map) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(mib: usize) -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), mib << 20)]).unwrap()
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let dir = std::env::temp_dir().join(format!("vessel-vmm-boot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage");
        std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
        let err = load_kernel(&mem(64), &path).unwrap_err();
        assert!(matches!(err, BootError::NotAKernel { .. }), "{err}");
        let err = load_kernel(&mem(64), &dir.join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn zero_page_describes_memory_cmdline_and_initrd() {
        let m = mem(64);
        let kernel = LoadedKernel {
            entry: GuestAddress(0x100200),
            mode: EntryMode::Linux64,
            end: 0x200000,
            setup_header: None,
        };
        let len = write_cmdline(&m, "console=ttyS0").unwrap();
        let initrd = Initrd {
            addr: GuestAddress(0x300_0000),
            size: 0x1234,
        };
        write_boot_info(&m, &kernel, len, Some(initrd), ACPI_RSDP_ADDR).unwrap();
        let params: boot_params = m.read_obj(GuestAddress(ZERO_PAGE_ADDR)).unwrap();
        assert_eq!({ params.hdr.boot_flag }, BOOT_FLAG_MAGIC);
        assert_eq!({ params.hdr.cmd_line_ptr }, CMDLINE_ADDR as u32);
        assert_eq!({ params.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ params.acpi_rsdp_addr }, ACPI_RSDP_ADDR);
        assert_eq!(params.e820_entries, 3);
        let ram: u64 = params.e820_table[..3]
            .iter()
            .filter(|e| e.r#type == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, EBDA_ADDR + (64 << 20) - HIGH_MEMORY_ADDR);
        assert!(matches!(write_cmdline(&m, "a\0b"), Err(BootError::CmdlineNul)));
        assert!(matches!(
            write_cmdline(&m, &"x".repeat(CMDLINE_MAX)),
            Err(BootError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn initrd_goes_high_and_refuses_to_overlap_the_kernel() {
        let m = mem(64);
        let dir = std::env::temp_dir().join(format!("vessel-vmm-initrd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("initrd");
        std::fs::write(&path, vec![7u8; 10_000]).unwrap();
        let kernel = LoadedKernel {
            entry: GuestAddress(0x100000),
            mode: EntryMode::Linux64,
            end: 0x200000,
            setup_header: None,
        };
        let initrd = load_initrd(&m, &kernel, &path).unwrap();
        assert_eq!(initrd.addr.0 % 4096, 0);
        assert!(initrd.addr.0 + initrd.size <= 64 << 20 && initrd.addr.0 > (60 << 20));
        let greedy = LoadedKernel {
            end: (64 << 20) - 4096,
            ..kernel
        };
        assert!(matches!(
            load_initrd(&m, &greedy, &path),
            Err(BootError::InitrdTooBig { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
