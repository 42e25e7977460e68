// Kernel version:             "6.1.0-57-amd64"
