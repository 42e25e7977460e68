import ArgumentParser
import NVBuildSupport

struct DKMSCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dkms",
        abstract: "Package a tree for DKMS and lint dkms.conf without executing it."
    )

    func run() async throws {
        throw UserError(.usage, "nvbuild dkms is not available in this build yet")
    }
}
