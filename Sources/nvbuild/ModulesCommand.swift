import ArgumentParser
import NVBuildSupport

struct ModulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "modules",
        abstract: "Load order, loader simulation and real loads under qemu."
    )

    func run() async throws {
        throw UserError(.usage, "nvbuild modules is not available in this build yet")
    }
}
