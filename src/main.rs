fn main() {
    std::process::exit(shmxfer::main());
}
