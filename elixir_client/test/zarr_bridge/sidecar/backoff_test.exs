defmodule ZarrBridge.Sidecar.BackoffTest do
  # Pure arithmetic: no sidecar, no Python.
  use ExUnit.Case, async: true

  alias ZarrBridge.Sidecar.Backoff

  test "the first failure restarts at once, then 100 ms doubling to a 10 s cap" do
    delays =
      Enum.map_reduce(1..12, 0, fn _, failures ->
        {failures, delay} = Backoff.next(failures, 1_000, false)
        {delay, failures}
      end)
      |> elem(0)

    assert delays == [0, 100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000, 10_000]
  end

  test "a sidecar that lived more than 5 s restarts at once, its failures still counted" do
    assert Backoff.next(4, 5_001, false) == {5, 0}
    assert Backoff.next(4, 5_000, false) == {5, 800}
  end

  test "a sidecar that stayed up 30 s resets the count" do
    assert Backoff.next(7, 30_000, false) == {1, 0}
    assert Backoff.next(7, 29_999, false) == {8, 0}
  end

  test "a configuration error backs off at once and never resets" do
    assert Backoff.next(0, 0, true) == {1, 100}
    assert Backoff.next(1, 0, true) == {2, 100}
    assert Backoff.next(2, 60_000, true) == {3, 200}
    assert Backoff.next(50, 0, true) == {51, 10_000}
  end

  test "huge failure counts stay capped without huge integers" do
    assert Backoff.delay(1_000_000) == 10_000
    assert Backoff.delay(1) == 0
  end
end
