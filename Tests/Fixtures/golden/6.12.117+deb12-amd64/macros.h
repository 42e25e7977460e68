// Kernel version:             "6.12.117+deb12-amd64"
