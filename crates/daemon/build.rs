//! vessel-supervisor runs once per instance, so its private memory is multiplied by the instance count: it
//! is linked as a fixed-position executable, whose relocated read-only data (vtables, panic locations) the
//! kernel then shares between all supervisors instead of copying per process (~260 KiB each as PIE).
//! A static build (`+crt-static`, the lab's) stays static-pie: gcc's -no-pie would undo -static-pie's static.

fn main() {
    let static_build =
        std::env::var("CARGO_CFG_TARGET_FEATURE").is_ok_and(|f| f.split(',').any(|x| x == "crt-static"));
    if !static_build {
        println!("cargo:rustc-link-arg-bin=vessel-supervisor=-no-pie");
    }
}
