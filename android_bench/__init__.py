"""Everything that talks to an Android phone: ADB connection and keys, device profiles, the benchmark_model
runner and its output parser. It takes .tflite files and returns timings, and imports nothing from toolchain."""
