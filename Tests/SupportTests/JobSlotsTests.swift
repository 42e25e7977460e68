import Foundation
import NVBuildSupport
import Testing

@Suite struct JobSlotsTests {
    /// Holds jobs until opened.
    actor Gate {
        private var open = false
        private var waiters: [CheckedContinuation<Void, Never>] = []

        func wait() async {
            if open { return }
            await withCheckedContinuation { waiters.append($0) }
        }

        func release() {
            open = true
            waiters.forEach { $0.resume() }
            waiters.removeAll()
        }
    }

    actor Tally {
        private var running = 0
        private(set) var peak = 0
        private(set) var order: [String] = []

        func enter(_ name: String) {
            running += 1
            peak = max(peak, running)
            order.append(name)
        }

        func leave() { running -= 1 }
    }

    /// Ordering is observed through the queue itself, not through timing.
    @Test func neverRunsMoreThanItsSlotsAndServesUrgentWorkFirst() async throws {
        let slots = JobSlots(2)
        let gate = Gate()
        let tally = Tally()
        func job(_ name: String, hold: Bool = false) -> @Sendable () async -> Void {
            {
                await tally.enter(name)
                if hold { await gate.wait() }
                await tally.leave()
            }
        }
        func waitUntilQueued(_ n: Int) async {
            while await slots.queued < n { await Task.yield() }
        }
        await withTaskGroup(of: Void.self) { group in
            // Two jobs hold both slots until the gate opens; the others queue up meanwhile.
            for n in 0..<2 { group.addTask { await slots.run(job("hold\(n)", hold: true)) } }
            while await tally.order.count < 2 { await Task.yield() }
            for n in 0..<4 {
                group.addTask { await slots.run(job("normal\(n)")) }
                await waitUntilQueued(n + 1)
            }
            group.addTask { await slots.run(urgent: true, job("urgent")) }
            await waitUntilQueued(5)
            await gate.release()
        }
        let order = await tally.order
        #expect(await tally.peak == 2)
        #expect(order.count == 7)
        #expect(order.firstIndex(of: "urgent") == 2, "queued urgent work goes before queued normal work: \(order)")
        #expect(order.filter { $0.hasPrefix("normal") } == ["normal0", "normal1", "normal2", "normal3"], "others in request order")
    }
}
