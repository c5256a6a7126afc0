defmodule ZarrBridge.Sidecar.Backoff do
  @moduledoc false
  # The restart policy of a sidecar (see "Restarts" in ZarrBridge.Sidecar),
  # as pure arithmetic: given the failures so far and how long the sidecar
  # lived, the new failure count and the delay before the next start.

  @first_ms 100
  @cap_ms 10_000
  @long_lived_ms 5_000
  @stable_ms 30_000

  @doc """
  `{failures, delay_ms}` after a sidecar that lived `lived_ms` failed, when
  `failures` failures came before it. `config_error?`: the failure is one
  that restarting does not fix (it backs off at once and never resets).
  """
  @spec next(non_neg_integer, non_neg_integer, boolean) :: {pos_integer, non_neg_integer}
  def next(failures, lived_ms, config_error?) do
    failures = if lived_ms >= @stable_ms and not config_error?, do: 1, else: failures + 1

    delay =
      cond do
        config_error? -> delay(max(failures, 2))
        failures == 1 or lived_ms > @long_lived_ms -> 0
        true -> delay(failures)
      end

    {failures, delay}
  end

  @doc "The delay before the start that follows failure number `failures` (from 2)."
  @spec delay(pos_integer) :: non_neg_integer
  def delay(failures) when failures >= 2,
    do: min(@first_ms * Integer.pow(2, min(failures - 2, 16)), @cap_ms)

  def delay(_failures), do: 0
end
