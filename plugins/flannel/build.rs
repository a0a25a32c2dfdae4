fn main() {
    if let Err(e) = vnt_ebpf::compile_with_records("bpf/flannel.bpf.c", &["flannel_tail"]) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
