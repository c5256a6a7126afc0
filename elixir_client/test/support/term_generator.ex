defmodule ZarrBridge.Test.TermGenerator do
  @moduledoc false
  # A small random-term generator for property-style tests (there is no
  # StreamData). It draws from the calling process's `:rand` state: call
  # `seed/1` first to make a run reproducible.
  #
  # `term/1` only produces terms that survive an encode/decode round trip
  # unchanged: no atoms other than nil/true/false/:nan/:infinity/:neg_infinity
  # (other atoms decode as strings), no `{:ext, -1, _}` (that is the
  # timestamp type), and `{:bin, _}` / `{:ext, _, _}` payloads are binaries.

  import Bitwise

  @doc "Seeds the process's random state; `seed` is any term `:rand.seed/2` accepts."
  def seed(seed), do: :rand.seed(:exsss, seed)

  @doc "A random term of roughly `size` nodes."
  def term(size) when size <= 1, do: scalar()

  def term(size) do
    case :rand.uniform(10) do
      n when n <= 4 -> scalar()
      n when n <= 7 -> list(size)
      _ -> map(size)
    end
  end

  @doc "A random list of terms, with a total of roughly `size` nodes."
  def list(size) do
    len = :rand.uniform(min(size, 20) + 1) - 1
    child = div(size - 1, max(len, 1))
    for _ <- 1..len//1, do: term(child)
  end

  @doc "A random map; keys are random terms too (mostly strings)."
  def map(size) do
    len = :rand.uniform(min(size, 12) + 1) - 1
    child = div(size - 1, max(2 * len, 1))

    for _ <- 1..len//1, into: %{} do
      key = if :rand.uniform(4) == 1, do: term(child), else: string()
      {key, term(child)}
    end
  end

  @doc "A random scalar (anything but a list or map)."
  def scalar do
    case :rand.uniform(11) do
      1 -> Enum.random([nil, true, false])
      n when n in 2..4 -> integer()
      n when n in 5..6 -> float()
      n when n in 7..8 -> string()
      9 -> {:bin, bytes(size_near_boundary())}
      10 -> ext()
      11 -> timestamp()
    end
  end

  @int_boundaries [
    0,
    1,
    127,
    128,
    255,
    256,
    0xFFFF,
    0x10000,
    0xFFFF_FFFF,
    0x1_0000_0000,
    0x7FFF_FFFF_FFFF_FFFF,
    0xFFFF_FFFF_FFFF_FFFF,
    -1,
    -32,
    -33,
    -128,
    -129,
    -0x8000,
    -0x8001,
    -0x8000_0000,
    -0x8000_0001,
    -0x8000_0000_0000_0000
  ]

  @doc "A random integer in -2^63..2^64-1, often near a size-class boundary."
  def integer do
    case :rand.uniform(3) do
      1 ->
        Enum.random(@int_boundaries)

      2 ->
        # Near a boundary, clamped to the encodable range.
        n = Enum.random(@int_boundaries) + :rand.uniform(5) - 3
        n |> max(-0x8000_0000_0000_0000) |> min(0xFFFF_FFFF_FFFF_FFFF)

      3 ->
        bits = Enum.random([4, 7, 8, 15, 16, 31, 32, 63, 64])
        n = :rand.uniform(1 <<< bits) - 1
        if :rand.uniform(2) == 1 and bits < 64, do: -n, else: n
    end
  end

  @doc "A random float, or one of :nan, :infinity, :neg_infinity."
  def float do
    case :rand.uniform(6) do
      1 ->
        Enum.random([0.0, 1.0, -1.5, 5.0e-324, 2.2250738585072014e-308, 1.7976931348623157e308])

      2 ->
        Enum.random([:nan, :infinity, :neg_infinity])

      3 ->
        :rand.uniform() * :math.pow(10, :rand.uniform(600) - 300) * Enum.random([1, -1])

      _ ->
        (:rand.uniform() - 0.5) * 1.0e6
    end
  end

  @doc "A random binary to be encoded as str (not necessarily UTF-8)."
  def string do
    case :rand.uniform(3) do
      1 -> bytes(size_near_boundary())
      _ -> for _ <- 1..:rand.uniform(12)//1, into: "", do: <<Enum.random(?a..?z)>>
    end
  end

  @doc "`{:ext, type, data}` with type in -128..127 but never -1."
  def ext do
    type = Enum.random(Enum.to_list(-128..-2) ++ Enum.to_list(0..127))
    {:ext, type, bytes(Enum.random([0, 1, 2, 3, 4, 5, 8, 12, 16, 17, 255, 256]))}
  end

  @doc "A valid `{:timestamp, sec, nsec}` in any of the three wire forms."
  def timestamp do
    nsec = if :rand.uniform(2) == 1, do: 0, else: :rand.uniform(1_000_000_000) - 1

    sec =
      case :rand.uniform(4) do
        1 -> :rand.uniform(1 <<< 32) - 1
        2 -> :rand.uniform(1 <<< 34) - 1
        3 -> -:rand.uniform(1 <<< 40)
        4 -> :rand.uniform(1 <<< 64) - (1 <<< 63) - 1
      end

    {:timestamp, sec, nsec}
  end

  @doc "`n` random bytes."
  def bytes(n), do: :rand.bytes(n)

  defp size_near_boundary do
    Enum.random([0, 1, 5, 15, 16, 31, 32, 33, 63, 64, 255, 256])
  end
end
