import Foundation
import Kbuild
import Synchronization

/// The status line of a build of several kernels at once: how many are done, running and
/// failed, then what each running one is doing. Written only when stderr is a terminal
/// (Terminal.status); lines printed meanwhile (`finish`) clear it first.
final class ProgressBoard: Sendable {
    private struct State {
        var order: [String] = []
        var doing: [String: String] = [:]
        var done = 0
        var failed = 0
    }

    private let state = Mutex(State())

    func start(_ labels: [String]) {
        state.withLock { state in
            state.order = labels
            for label in labels { state.doing[label] = "waiting" }
        }
        render()
    }

    func update(_ progress: BuildProgress) {
        let text: String?
        switch progress.phase {
        case .preparing: text = "probing"
        case .compiling: text = "\(progress.compiledObjects) compiled"
        case .linking: text = "linking \(progress.lastItem ?? "")"
        case .finished: text = nil
        }
        state.withLock { state in
            guard state.doing[progress.label] != nil else { return }
            if let text { state.doing[progress.label] = text }
        }
        render()
    }

    /// A kernel finished: `report` prints its line above the status line.
    func finish(_ label: String, succeeded: Bool, report: () -> Void) {
        state.withLock { state in
            state.doing[label] = nil
            state.done += 1
            if !succeeded { state.failed += 1 }
        }
        Terminal.clearStatus()
        report()
        render()
    }

    func close() {
        Terminal.clearStatus()
    }

    private func render() {
        let line = state.withLock { state -> String in
            let running = state.order.filter { state.doing[$0] != nil }
            var text = "[\(state.done)/\(state.order.count) done, \(running.count) running, \(state.failed) failed]"
            if running.count > 0 {
                text += " " + running.map { "\($0): \(state.doing[$0] ?? "")" }.joined(separator: " · ")
            }
            return text
        }
        // One terminal row, or the carriage return that rewrites it would not reach its start.
        var size = winsize()
        let width = ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0 && size.ws_col > 10 ? Int(size.ws_col) - 1 : 79
        Terminal.status(line.count > width ? String(line.prefix(width - 1)) + "…" : line)
    }
}
