//! One module per subcommand.

pub mod doctor;
pub mod events;
pub mod games;
pub mod limits;
pub mod operation;
pub mod peers;
pub mod set_game_dir;
pub mod status;
pub mod top;
pub mod verify;
