//! The {{name}} service's binary: flags and environment in, everything else in the library.

fn main() -> std::process::ExitCode {
    flotilla::app::main::<{{crate}}::{{Type}}>()
}
