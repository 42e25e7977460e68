import ArgumentParser
import KernelTree
import NVBuildSupport

/// How a command picks its target kernel; shared by every command that needs one.
struct KernelOptions: ParsableArguments {
    @Option(name: .customLong("kernel"), help: "Kernel release under /lib/modules (default: the running kernel if its headers exist, else the newest installed).")
    var release: String?

    @Option(name: .customLong("kernel-source"), help: "Kernel source tree, like the driver Makefile's SYSSRC.")
    var sourceDirectory: String?

    @Option(name: .customLong("kernel-output"), help: "Configured kernel output tree, like SYSOUT (default: the source tree).")
    var outputDirectory: String?

    /// Resolves the options to one kernel, and a sentence saying why it was chosen when it was not named.
    func resolve(discovery: KernelDiscovery = KernelDiscovery()) throws -> (KernelTarget, note: String?) {
        if let sourceDirectory {
            return (try discovery.kernel(sourceDirectory: sourceDirectory, outputDirectory: outputDirectory), nil)
        }
        if let outputDirectory {
            return (try discovery.kernel(sourceDirectory: outputDirectory, outputDirectory: outputDirectory), nil)
        }
        if let release {
            return (try discovery.kernel(release: release), nil)
        }
        let (kernel, reason) = try discovery.defaultKernel()
        return (kernel, "using kernel \(kernel.release): \(reason)")
    }
}
