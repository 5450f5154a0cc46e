//! ACPI tables that describe the machine to the guest.
