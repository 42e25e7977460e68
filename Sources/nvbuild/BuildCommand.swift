import ArgumentParser
import NVBuildSupport

struct BuildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "build",
        abstract: "Build modules through the kernel's own Kbuild, for one kernel or many."
    )

    func run() async throws {
        throw UserError(.usage, "nvbuild build is not available in this build yet")
    }
}
