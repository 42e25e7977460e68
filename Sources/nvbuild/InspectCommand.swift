import ArgumentParser
import NVBuildSupport

struct InspectCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Read .ko/.ko.xz/.ko.zst/.ko.gz files like modinfo, readelf and nm together."
    )

    func run() async throws {
        throw UserError(.usage, "nvbuild inspect is not available in this build yet")
    }
}
