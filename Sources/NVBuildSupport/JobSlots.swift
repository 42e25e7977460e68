/// A fixed number of slots for concurrent jobs (compiler processes), handed out
/// in request order. Work of different kinds can then be started as soon as it
/// is known, while the machine never runs more than `count` jobs at once.
public actor JobSlots {
    private var free: Int
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var waitingUrgent: [CheckedContinuation<Void, Never>] = []

    public init(_ count: Int) {
        free = max(1, count)
    }

    /// How many callers wait for a slot.
    public var queued: Int { waiting.count + waitingUrgent.count }

    /// Runs `body` while holding one slot; urgent work is served before other waiting work.
    public func run<T: Sendable>(urgent: Bool = false, _ body: @Sendable () async throws -> T) async rethrows -> T {
        await acquire(urgent: urgent)
        defer { release() }
        return try await body()
    }

    private func acquire(urgent: Bool) async {
        if free > 0 {
            free -= 1
            return
        }
        await withCheckedContinuation { continuation in
            if urgent { waitingUrgent.append(continuation) } else { waiting.append(continuation) }
        }
    }

    private func release() {
        if !waitingUrgent.isEmpty {
            waitingUrgent.removeFirst().resume()
        } else if !waiting.isEmpty {
            waiting.removeFirst().resume()
        } else {
            free += 1
        }
    }
}
