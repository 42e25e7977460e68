import ArgumentParser
import Foundation
import KernelTree
import ModuleGraph
import NVBuildSupport

struct ModulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modules",
        abstract: "Load order, loader simulation and real loads under qemu.",
        subcommands: [ModulesOrderCommand.self]
    )
}

/// Where a modules subcommand finds the target kernel's module tree.
struct ModuleTreeOptions: ParsableArguments {
    @OptionGroup var kernel: KernelOptions

    @Option(help: "Base directory like depmod's -b: the tree is <DIR>/lib/modules/<release>.")
    var root: String?

    @Option(name: .customLong("config"), help: "A modprobe.d directory or file to read (repeatable; none by default, so the host's configuration does not apply).")
    var configDirectories: [String] = []

    /// The release and its module directory; a `--root` tree needs no headers.
    func resolveModuleDirectory() throws -> (release: String, directory: String, target: KernelTarget?) {
        if let root {
            guard let release = kernel.release else {
                throw UserError(.usage, "--root needs --kernel <release> to name the tree under \(root)/lib/modules")
            }
            return (release, "\(root)/lib/modules/\(release)", try? KernelDiscovery().kernel(release: release))
        }
        let (target, note) = try kernel.resolve()
        if let note { Terminal.note(note) }
        let directory = target.moduleDirectory ?? "/lib/modules/\(target.release)"
        return (target.release, directory, target)
    }
}

struct ModulesOrderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "order",
        abstract: "Print the load order exactly as `modprobe --show-depends -S <release>` does.",
        discussion: """
            Each argument is a module name, an alias, or the path of a module file; \
            paths join the graph with the `depends` of their modinfo. Nothing is read \
            from the host's loaded modules or, unless --config is given, its modprobe.d.

            Example:
              nvbuild modules order --kernel 6.12.117+deb12-amd64 ext4 nvidia.ko
            """
    )

    @OptionGroup var tree: ModuleTreeOptions
    @Flag(help: "Print JSON instead of modprobe's lines.") var json = false
    @Argument(help: "Module names, aliases or module file paths.") var modules: [String]

    func run() async throws {
        let (_, directory, _) = try tree.resolveModuleDirectory()
        let moduleTree = try ModuleTree(moduleDirectory: directory, configDirectories: tree.configDirectories)
        let listings = moduleTree.dependencyListings(for: modules)
        if json {
            try Terminal.json(listings)
        } else {
            var text = ""
            for listing in listings {
                for line in listing.lines { text += line + "\n" }
            }
            FileHandle.standardOutput.write(Data(text.utf8))
            for listing in listings { if let error = listing.error { Terminal.error(error) } }
        }
        if listings.contains(where: { $0.error != nil }) { throw ExitCode(1) }
    }
}
