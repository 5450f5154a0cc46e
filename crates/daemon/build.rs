//! vessel-supervisor runs once per instance, so its private memory is multiplied by the instance count: it
//! is linked as a fixed-position executable, whose relocated read-only data (vtables, panic locations) the
//! kernel then shares between all supervisors instead of copying per process (~260 KiB each as PIE).

fn main() {
    println!("cargo:rustc-link-arg-bin=vessel-supervisor=-no-pie");
}
