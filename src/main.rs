fn main() {
    print!("{}", workerpool_operator::api::crd_yaml());
}
