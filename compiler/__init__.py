"""netc.compiler: everything from `.net` text to an LLVM module. Never imports the runtime."""
