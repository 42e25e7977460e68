import ArgumentParser
import NVBuildSupport

struct ProbeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe",
        abstract: "Run the conftest checks a driver tree requests and write its conftest/ headers."
    )

    func run() async throws {
        throw UserError(.usage, "nvbuild probe is not available in this build yet")
    }
}
