// Kernel version:             "6.1.0-56-amd64"
