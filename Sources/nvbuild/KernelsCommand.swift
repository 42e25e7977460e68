import ArgumentParser
import KernelTree
import NVBuildSupport

struct KernelsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "List installed kernel build trees and the facts that matter for building modules.",
        discussion: """
            Example:
              nvbuild kernels
              nvbuild kernels --kernel 6.12.118+deb12-amd64 --json
            """
    )

    @OptionGroup var kernel: KernelOptions
    @Flag(help: "Print JSON instead of a table.") var json = false

    func run() async throws {
        let kernels: [KernelTarget]
        if kernel.release != nil || kernel.sourceDirectory != nil || kernel.outputDirectory != nil {
            kernels = [try kernel.resolve().0]
        } else {
            kernels = KernelDiscovery().installedKernels()
        }
        if json {
            try Terminal.json(kernels.map { Listing(kernel: $0, image: KernelImage(release: $0.release)) })
            return
        }
        if kernels.isEmpty {
            throw UserError(.environment, "no kernel headers found under /lib/modules/*/build; install some, e.g. apt-get install linux-headers-amd64")
        }
        for k in kernels {
            Terminal.out(Terminal.styled(k.release, .bold))
            Terminal.out("  output:   \(k.outputDirectory)")
            Terminal.out("  source:   \(k.sourceDirectory)")
            Terminal.out("  arch:     \(k.arch)")
            let cc = k.compiler.map { "\($0) (\(k.compilerInstalled ? "installed" : "NOT installed"))" } ?? "unknown"
            Terminal.out("  compiler: \(cc)")
            let f = k.facts
            let image = KernelImage(release: k.release)
            Terminal.out("  image:    " + (image.problem(release: k.release) ?? "installed (modules, vmlinuz)"))
            Terminal.out("  config:   PREEMPT_RT=\(yn(f.preemptRT)) MODVERSIONS=\(yn(f.modversions)) MODULE_SIG=\(yn(f.moduleSig)) MODULE_SIG_FORCE=\(yn(f.moduleSigForce)) compression=\(f.moduleCompression)")
        }
    }

    private func yn(_ b: Bool) -> String { b ? "y" : "n" }

    /// The JSON row: the kernel's fields as before, plus what of its image is installed.
    private struct Listing: Encodable {
        let kernel: KernelTarget
        let image: KernelImage

        func encode(to encoder: any Encoder) throws {
            try kernel.encode(to: encoder)
            var container = encoder.container(keyedBy: Key.self)
            try container.encode(image, forKey: .image)
        }

        private enum Key: String, CodingKey { case image }
    }
}
