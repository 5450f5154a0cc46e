//! The tables as a guest reads them: from guest memory, following the pointers from the RSDP.
//! The `iasl_*` tests hand the tables to ACPICA's disassembler (Debian package acpica-tools), the
//! same parser family Linux uses.

use super::fadt::{
    HYPERVISOR_VENDOR_ID, IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT, IAPC_BOOT_ARCH_VGA_NOT_PRESENT,
};
use super::*;
use std::path::PathBuf;
use std::process::Command;
use vm_memory::GuestMemoryMmap;

fn memory() -> GuestMemory {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 2 << 20)]).unwrap()
}

fn machine(vcpus: u8, devices: u32, serial: bool) -> AcpiMachine {
    AcpiMachine {
        vcpus,
        virtio_mmio: (0..devices).map(VirtioMmioWindow::at_layout_index).collect(),
        serial,
        power_button: true,
    }
}

fn read(mem: &GuestMemory, addr: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
    bytes
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(bytes[offset..offset + 2].try_into().unwrap())
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// A system description table at `addr`, whole (its length is in its header).
fn table(mem: &GuestMemory, addr: u64) -> Vec<u8> {
    let header = read(mem, addr, 36);
    read(mem, addr, u32_at(&header, 4) as usize)
}

/// Every table of the machine, found the way the guest finds them.
struct Tables {
    rsdp_addr: u64,
    rsdp: Vec<u8>,
    xsdt_addr: u64,
    xsdt: Vec<u8>,
    fadt: Vec<u8>,
    madt: Vec<u8>,
    dsdt_addr: u64,
    dsdt: Vec<u8>,
}

impl Tables {
    fn all(&self) -> [(&'static str, u64, &[u8]); 4] {
        [
            ("XSDT", self.xsdt_addr, &self.xsdt),
            ("FACP", self.xsdt_entries()[0], &self.fadt),
            ("APIC", self.xsdt_entries()[1], &self.madt),
            ("DSDT", self.dsdt_addr, &self.dsdt),
        ]
    }

    fn xsdt_entries(&self) -> Vec<u64> {
        self.xsdt[36..].chunks(8).map(|entry| u64_at(entry, 0)).collect()
    }
}

fn write(machine: &AcpiMachine) -> Tables {
    let mem = memory();
    let rsdp_addr = write_acpi_tables(&mem, machine).unwrap();
    let rsdp = read(&mem, rsdp_addr, 36);
    let xsdt_addr = u64_at(&rsdp, 24);
    let xsdt = table(&mem, xsdt_addr);
    let entries: Vec<u64> = xsdt[36..].chunks(8).map(|entry| u64_at(entry, 0)).collect();
    assert_eq!(entries.len(), 2, "XSDT entries: {entries:x?}");
    let fadt = table(&mem, entries[0]);
    let madt = table(&mem, entries[1]);
    let dsdt_addr = u64_at(&fadt, 140);
    let dsdt = table(&mem, dsdt_addr);
    Tables {
        rsdp_addr,
        rsdp,
        xsdt_addr,
        xsdt,
        fadt,
        madt,
        dsdt_addr,
        dsdt,
    }
}

#[test]
fn acpi_rsdp_is_revision_2_with_both_checksums_and_points_to_the_xsdt() {
    let tables = write(&machine(2, 2, true));
    assert_eq!(tables.rsdp_addr, layout::ACPI_RSDP_ADDR);
    assert_eq!(
        tables.rsdp_addr % 16,
        0,
        "the guest scans for the RSDP in 16-byte steps"
    );
    let rsdp = &tables.rsdp;
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(&rsdp[9..15], b"VESSEL");
    assert_eq!(rsdp[15], 2, "revision");
    assert_eq!(sum(&rsdp[..20]), 0, "ACPI 1.0 checksum over the first 20 bytes");
    assert_eq!(u32_at(rsdp, 16), 0, "no RSDT");
    assert_eq!(u32_at(rsdp, 20), 36, "length");
    assert_eq!(sum(rsdp), 0, "extended checksum over all 36 bytes");
    assert_eq!(&tables.xsdt[0..4], b"XSDT");
}

#[test]
fn acpi_every_table_checksums_to_zero_and_stays_in_its_area() {
    for machine in [
        machine(1, 0, false),
        machine(4, 3, true),
        machine(255, layout::VIRTIO_MAX_DEVICES, true),
    ] {
        let tables = write(&machine);
        let mut spans = vec![(tables.rsdp_addr, 36)];
        for (signature, addr, bytes) in tables.all() {
            assert_eq!(&bytes[0..4], signature.as_bytes());
            assert_eq!(u32_at(bytes, 4) as usize, bytes.len());
            assert_eq!(sum(bytes), 0, "{signature} checksum");
            assert_eq!(&bytes[10..16], b"VESSEL", "{signature} OEM id");
            spans.push((addr, bytes.len() as u64));
        }
        spans.sort();
        for pair in spans.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "tables overlap: {spans:x?}");
        }
        let (last, len) = spans[spans.len() - 1];
        assert!(spans[0].0 >= layout::ACPI_RSDP_ADDR);
        assert!(
            last + len <= layout::ACPI_TABLES_END,
            "tables end at {:#x}",
            last + len
        );
    }
}

#[test]
fn acpi_xsdt_lists_fadt_and_madt_and_the_fadt_reaches_the_dsdt() {
    let tables = write(&machine(2, 1, false));
    assert_eq!(&tables.fadt[0..4], b"FACP");
    assert_eq!(&tables.madt[0..4], b"APIC");
    assert_eq!(u32_at(&tables.fadt, 40), 0, "32-bit DSDT pointer unused");
    assert_eq!(&tables.dsdt[0..4], b"DSDT");
}

#[test]
fn acpi_fadt_is_hardware_reduced_with_sleep_and_reset_registers() {
    let fadt = write(&machine(1, 1, true)).fadt;
    assert_eq!(fadt.len(), 276, "ACPI 6.x FADT length");
    assert!(fadt[8] >= 6, "FADT revision {}", fadt[8]);
    let flags = u32_at(&fadt, 112);
    assert_ne!(flags & (1 << 20), 0, "HW_REDUCED_ACPI");
    assert_ne!(flags & (1 << 10), 0, "RESET_REG_SUP");
    assert_ne!(flags & (1 << 4), 0, "PWR_BUTTON: no fixed-feature power button");
    assert_ne!(flags & (1 << 5), 0, "SLP_BUTTON: no fixed-feature sleep button");
    let boot_arch = u16_at(&fadt, 109);
    assert_eq!(boot_arch & 0b11, 0, "no legacy devices, no 8042");
    assert_eq!(boot_arch & (1 << 3), 0, "MSI left alone");
    assert_ne!(boot_arch & IAPC_BOOT_ARCH_VGA_NOT_PRESENT, 0);
    assert_ne!(boot_arch & IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT, 0);

    // Generic address structures: space id 1 (system I/O), 8 bits wide, offset 0, byte access.
    let io_byte = |offset: usize, port: u16| {
        assert_eq!(
            &fadt[offset..offset + 4],
            &[1, 8, 0, 1],
            "GAS at FADT offset {offset}"
        );
        assert_eq!(
            u64_at(&fadt, offset + 4),
            u64::from(port),
            "GAS at FADT offset {offset}"
        );
    };
    io_byte(116, layout::ACPI_RESET_PORT);
    assert_eq!(fadt[128], layout::ACPI_RESET_VALUE);
    io_byte(244, layout::ACPI_SLEEP_CONTROL_PORT);
    io_byte(256, layout::ACPI_SLEEP_STATUS_PORT);
    assert_eq!(&fadt[268..276], &HYPERVISOR_VENDOR_ID);
    assert_eq!(u32_at(&fadt, 36), 0, "no FACS on a hardware-reduced platform");
    assert_eq!(u64_at(&fadt, 132), 0, "no X_FACS on a hardware-reduced platform");
}

#[test]
fn acpi_madt_has_one_enabled_local_apic_per_vcpu_and_one_ioapic() {
    for vcpus in [1u8, 3, 255] {
        let madt = write(&machine(vcpus, 0, false)).madt;
        assert_eq!(u32_at(&madt, 36) as u64, layout::LAPIC_ADDR);
        let mut lapics = Vec::new();
        let mut ioapics = Vec::new();
        let mut offset = 44;
        while offset < madt.len() {
            let (kind, len) = (madt[offset], madt[offset + 1] as usize);
            let entry = &madt[offset..offset + len];
            match kind {
                0 => lapics.push((entry[2], entry[3], u32_at(entry, 4))),
                1 => ioapics.push((entry[2], u32_at(entry, 4), u32_at(entry, 8))),
                other => panic!("unexpected MADT entry type {other}"),
            }
            offset += len;
        }
        assert_eq!(offset, madt.len());
        let expected: Vec<_> = (0..vcpus).map(|cpu| (cpu, cpu, 1)).collect();
        assert_eq!(lapics, expected, "(processor uid, APIC id, flags=enabled)");
        assert_eq!(
            ioapics,
            vec![(0, layout::IOAPIC_ADDR as u32, 0)],
            "(id, address, GSI base)"
        );
    }
}

#[test]
fn acpi_dsdt_names_s5_and_one_device_per_window() {
    let dsdt = write(&machine(1, 3, true)).dsdt;
    let contains = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"_S5_"));
    assert_eq!(dsdt.windows(8).filter(|w| *w == b"LNRO0005").count(), 3);
    for name in [b"VM00", b"VM01", b"VM02", b"COM1"] {
        assert!(contains(name), "{}", String::from_utf8_lossy(name));
    }
    assert!(!contains(b"VM03"));
    for name in [&b"PWRB"[..], b"GED0", b"ACPI0013", b"_EVT"] {
        assert!(contains(name), "{}", String::from_utf8_lossy(name));
    }

    let mut without = machine(1, 1, true);
    without.power_button = false;
    let dsdt = write(&without).dsdt;
    let contains = |needle: &[u8]| dsdt.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"GED0") && !contains(b"PWRB"));
}

#[test]
fn acpi_rejects_machines_it_cannot_describe() {
    let mem = memory();
    let err = write_acpi_tables(&mem, &machine(0, 1, false)).unwrap_err();
    assert!(matches!(err, AcpiError::NoVcpus), "{err}");

    let mut high = machine(1, 1, false);
    high.virtio_mmio[0].base = 0xffff_f800;
    let err = write_acpi_tables(&mem, &high).unwrap_err();
    assert!(matches!(err, AcpiError::WindowAbove4G { index: 0, .. }), "{err}");
    assert!(err.to_string().contains("0xfffff800+0x1000"), "{err}");

    let mut past_ioapic = machine(1, 2, false);
    past_ioapic.virtio_mmio[1].gsi = 24;
    let err = write_acpi_tables(&mem, &past_ioapic).unwrap_err();
    assert!(
        matches!(err, AcpiError::GsiOutOfRange { index: 1, gsi: 24 }),
        "{err}"
    );

    let mut on_com1 = machine(1, 1, true);
    on_com1.virtio_mmio[0].gsi = layout::COM1_GSI;
    let err = write_acpi_tables(&mem, &on_com1).unwrap_err();
    assert!(err.to_string().contains("already used by COM1"), "{err}");
    on_com1.serial = false;
    write_acpi_tables(&mem, &on_com1).unwrap();

    let mut on_ged = machine(1, 1, false);
    on_ged.virtio_mmio[0].gsi = layout::ACPI_GED_GSI;
    let err = write_acpi_tables(&mem, &on_ged).unwrap_err();
    assert!(
        err.to_string().contains("already used by the ACPI event device"),
        "{err}"
    );
    on_ged.power_button = false;
    write_acpi_tables(&mem, &on_ged).unwrap();
}

#[test]
fn acpi_reports_tables_that_do_not_fit_and_memory_that_is_missing() {
    let mut area = Area::new(layout::ACPI_RSDP_ADDR, layout::ACPI_RSDP_ADDR + 0x100);
    assert_eq!(area.place(36).unwrap(), layout::ACPI_RSDP_ADDR);
    assert_eq!(area.place(0x40).unwrap(), layout::ACPI_RSDP_ADDR + 0x30);
    let err = area.place(0x100).unwrap_err();
    assert!(matches!(err, AcpiError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("past the end of their area"), "{err}");

    // Guest RAM that stops below the ACPI area.
    let small = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x80000)]).unwrap();
    let err = write_acpi_tables(&small, &machine(1, 1, false)).unwrap_err();
    assert!(
        matches!(err, AcpiError::GuestMemory { table: "RSDP", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("guest memory at 0xe0000"), "{err}");
}

/// A scratch directory for the ACPICA tools' input and output, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("vessel-acpi-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `bytes` to `<name>.dat` in the scratch directory and returns the file name.
    fn table_file(&self, name: &str, bytes: &[u8]) -> String {
        let file = format!("{name}.dat");
        std::fs::write(self.0.join(&file), bytes).unwrap();
        file
    }

    /// Runs an ACPICA tool in the scratch directory; fails (never skips) when it is missing.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let output = match Command::new(program).args(args).current_dir(&self.0).output() {
            Ok(output) => output,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                panic!("{program} not found: install acpica-tools (apt-get install -y acpica-tools)")
            }
            Err(err) => panic!("cannot run {program}: {err}"),
        };
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(output.status.success(), "{program} {args:?} failed:\n{log}");
        log
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Disassembles one table with `iasl -d` and returns the ASL text.
fn iasl_disassemble(scratch: &Scratch, name: &str, bytes: &[u8]) -> String {
    let input = scratch.table_file(name, bytes);
    let log = scratch.run("iasl", &["-d", &input]);
    let dsl = std::fs::read_to_string(scratch.0.join(format!("{name}.dsl")))
        .unwrap_or_else(|err| panic!("iasl -d {name} wrote no {name}.dsl ({err}):\n{log}"));
    assert!(!dsl.contains("**** "), "iasl flagged a problem in {name}:\n{dsl}");
    dsl
}

#[test]
fn acpi_iasl_disassembles_the_dsdt() {
    let scratch = Scratch::new("dsdt");
    let mut machine = machine(2, 2, true);
    machine.virtio_mmio[1] = VirtioMmioWindow {
        base: 0xd000_1000,
        size: 0x200,
        gsi: 17,
    };
    let dsl = iasl_disassemble(&scratch, "dsdt", &write(&machine).dsdt);
    for expected in [
        "DefinitionBlock (\"\", \"DSDT\", 6, \"VESSEL\", \"VESSELVM\", 0x00000001)",
        "Name (\\_S5, Package (0x04)  // _S5_: S5 System State\n    {\n        0x05, \n        Zero, ",
        "Scope (\\_SB)",
        "Device (VM00)",
        "Device (VM01)",
        "Name (_HID, \"LNRO0005\")",
        "Name (_UID, Zero)",
        "Name (_UID, One)",
        "Memory32Fixed (ReadWrite,\n                    0xD0000000,         // Address Base\n                    0x00001000,",
        "Memory32Fixed (ReadWrite,\n                    0xD0001000,         // Address Base\n                    0x00000200,",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000005,",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000011,",
        "Device (COM1)",
        "Name (_HID, EisaId (\"PNP0501\")",
        "IO (Decode16,\n                    0x03F8,             // Range Minimum\n                    0x03F8,             // Range Maximum\n                    0x01,               // Alignment\n                    0x08,               // Length",
        "0x00000004,",
        "Device (PWRB)",
        "Name (_HID, EisaId (\"PNP0C0C\") /* Power Button Device */)",
        "Device (GED0)",
        "Name (_HID, \"ACPI0013\" /* Generic Event Device */)",
        "Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, )\n                {\n                    0x00000017,",
        "OperationRegion (GDST, SystemIO, 0x0603, One)",
        "Field (GDST, ByteAcc, NoLock, Preserve)\n            {\n                GSTS,   8\n            }",
        "Method (_EVT, 1, Serialized)",
        "Local0 = GSTS /* \\_SB_.GED0.GSTS */\n                If (((Local0 & One) == One))\n                {\n                    Notify (\\_SB.PWRB, 0x80)",
    ] {
        assert!(dsl.contains(expected), "DSDT disassembly lacks {expected:?}:\n{dsl}");
    }
    // The disassembly compiles back without errors or warnings (iasl checks predefined names
    // such as _HID/_UID/_CRS/_S5_ for their expected types).
    let log = scratch.run("iasl", &["-p", "recompiled", "dsdt.dsl"]);
    assert!(
        log.contains("0 Errors, 0 Warnings"),
        "recompiling the DSDT:\n{log}"
    );
}

/// ACPICA's `acpiexec` loads FADT and DSDT the way the kernel's ACPICA does, then carries out S5
/// through the hardware-reduced sleep registers and decodes `_CRS` with the kernel's resource code.
#[test]
fn acpi_acpiexec_powers_off_through_the_sleep_registers_and_decodes_resources() {
    let scratch = Scratch::new("acpiexec");
    let tables = write(&machine(1, 2, true));
    let fadt = scratch.table_file("facp", &tables.fadt);
    let dsdt = scratch.table_file("dsdt", &tables.dsdt);
    let log = scratch.run(
        "acpiexec",
        &[
            "-b",
            "sleep 5; resources \\_SB.VM01; resources \\_SB.COM1",
            &fadt,
            &dsdt,
        ],
    );
    let log = squeeze(&log);
    for expected in [
        "Register values for sleep state S5: Sleep-A: 05",
        // acpi_hw_extended_sleep: the path taken only with HW_REDUCED_ACPI and both sleep registers.
        "HwExtendedSleep : Entering sleep state [S5]",
        "32-Bit Fixed Memory Range Resource\nWrite Protect : ReadWrite\nAddress : D0001000\nAddress Length : 00001000",
        "Extended IRQ Resource\nType : ResourceConsumer\nTriggering : Edge\nPolarity : ActiveHigh\nSharing : Exclusive",
        "Dword00 : 00000006",
        "I/O Resource\nAddress Decoding : Decode16\nAddress Minimum : 03F8\nAddress Maximum : 03F8\nAlignment : 01\nAddress Length : 08",
        "Dword00 : 00000004",
    ] {
        assert!(log.contains(expected), "acpiexec output lacks {expected:?}:\n{log}");
    }
    for unexpected in ["AE_NOT_EXIST", "AE_NOT_FOUND, While", "ACPI Error"] {
        assert!(
            !log.contains(unexpected),
            "acpiexec reported {unexpected:?}:\n{log}"
        );
    }
}

/// The GED's `_EVT` as ACPICA runs it: with the status register clear it notifies nothing; with
/// the power-button bit set (an SSDT written for the test stores it, as acpiexec simulates I/O
/// ports with memory) it sends `Notify (PWRB, 0x80)`, which Linux's button driver turns into
/// KEY_POWER. Also checks the interrupt acpiexec decodes from the GED's `_CRS`.
#[test]
fn acpi_acpiexec_ged_event_notifies_the_power_button() {
    let scratch = Scratch::new("ged");
    let tables = write(&machine(1, 1, true));
    let fadt = scratch.table_file("facp", &tables.fadt);
    let dsdt = scratch.table_file("dsdt", &tables.dsdt);
    let press = r#"DefinitionBlock ("", "SSDT", 2, "VESSEL", "PRESS", 1)
{
    External (\_SB.GED0.GSTS, FieldUnitObj)
    External (\_SB.GED0._EVT, MethodObj)
    Method (\PRES, 0, Serialized)
    {
        \_SB.GED0.GSTS = 1
        \_SB.GED0._EVT (23)
    }
}
"#;
    std::fs::write(scratch.0.join("press.asl"), press).unwrap();
    scratch.run("iasl", &["press.asl"]);
    let gsi = layout::ACPI_GED_GSI;
    let commands = format!("execute \\_SB.GED0._EVT {gsi:#x}; execute \\PRES; resources \\_SB.GED0");
    let log = scratch.run("acpiexec", &["-b", &commands, &fadt, &dsdt, "press.aml"]);
    let log = squeeze(&log);
    let (idle, pressed) = log
        .split_once("Evaluating \\PRES")
        .unwrap_or_else(|| panic!("acpiexec did not run \\PRES:\n{log}"));
    assert!(idle.contains("Evaluating \\_SB.GED0._EVT"), "{log}");
    assert!(
        !idle.contains("Notify"),
        "a clear status register notifies nothing:\n{log}"
    );
    assert_eq!(
        pressed.matches("Received a Device Notify on [PWRB]").count(),
        1,
        "{log}"
    );
    assert!(pressed.contains("Value 0x80 (Status Change)"), "{log}");
    assert!(
        pressed.contains("Extended IRQ Resource\nType : ResourceConsumer\nTriggering : Edge"),
        "{log}"
    );
    assert!(pressed.contains(&format!("Dword00 : {gsi:08X}")), "{log}");
    for unexpected in ["AE_NOT_EXIST", "AE_NOT_FOUND, While", "ACPI Error", "AE_AML"] {
        assert!(
            !log.contains(unexpected),
            "acpiexec reported {unexpected:?}:\n{log}"
        );
    }
}

#[test]
fn acpi_iasl_decodes_the_fadt_and_madt() {
    let scratch = Scratch::new("fadt-madt");
    let tables = write(&machine(3, 1, true));

    let fadt = iasl_disassemble(&scratch, "facp", &tables.fadt);
    let dsdt_line = format!(": {:016X}", tables.dsdt_addr);
    for expected in [
        "Hardware Reduced (V5) : 1",
        "Reset Register Supported (V2) : 1",
        "VGA Not Present (V4) : 1",
        "CMOS RTC Not Present (V5) : 1",
        "Legacy Devices Supported (V2) : 0",
        "8042 Present on ports 60/64 (V2) : 0",
        "Value to cause reset : 0F",
        // "VESSELVM" read as a little-endian u64.
        "Hypervisor ID : 4D564C4553534556",
        dsdt_line.as_str(),
    ] {
        assert!(
            squeeze(&fadt).contains(expected),
            "FADT disassembly lacks {expected:?}:\n{fadt}"
        );
    }

    let madt = iasl_disassemble(&scratch, "apic", &tables.madt);
    let madt = squeeze(&madt);
    assert_eq!(
        madt.matches("Subtable Type : 00 [Processor Local APIC]").count(),
        3,
        "{madt}"
    );
    assert_eq!(madt.matches("Subtable Type : 01 [I/O APIC]").count(), 1, "{madt}");
    assert!(madt.contains("Local Apic Address : FEE00000"), "{madt}");
    assert!(madt.contains("Address : FEC00000"), "{madt}");
    assert!(madt.contains("Local Apic ID : 02"), "{madt}");
}

/// iasl aligns its data-table fields with runs of spaces; collapse them so tests can match text.
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split(' ').filter(|word| !word.is_empty()) {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push(' ');
        }
        out.push_str(word);
    }
    out
}
