//! Command-line tools built on the library: offline thermal decoding, the sensor simulator and load tool.

pub mod bench_detect;
pub mod collect;
pub mod eval_frames;
pub mod loadtest_alarm;
pub mod loadtest_sensors;
pub mod loadtest_streams;
pub mod loadtest_uplink;
pub mod loadtest_vision;
pub mod model_check;
pub mod prom;
pub mod thermal_decode;
