fn main() {
    // The C declares the records once; their Rust mirrors are generated from
    // the object's BTF with every offset asserted.
    if let Err(e) = vnt_ebpf::compile_with_records("bpf/ovs.bpf.c", &["ovs_tail", "ovs_event"]) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
