fn main() {
    if let Err(e) = vnt_ebpf::compile("bpf/veth.bpf.c") {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
