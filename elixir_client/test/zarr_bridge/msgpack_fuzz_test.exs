defmodule ZarrBridge.MsgpackFuzzTest do
  # Time-bounded fuzzing of ZarrBridge.Msgpack with the project's own term
  # generator (test/support/term_generator.ex) and a mutator: whatever the
  # bytes, decode/1 and decode_prefix/1 return {:ok, ...} or {:error, _},
  # never raise, never run long, and whatever they return encodes back to
  # bytes that decode to the same term.
  #
  # `make test` runs it for 3 s. For a longer run:
  #
  #     ZB_FUZZ_SECONDS=600 mix test test/zarr_bridge/msgpack_fuzz_test.exs
  #
  # A failure prints the seed and the case's input in hex; `mix test --seed N`
  # replays the same sequence.
  use ExUnit.Case, async: true

  import Bitwise

  alias ZarrBridge.Msgpack
  alias ZarrBridge.Test.TermGenerator

  @default_seconds 3
  # One decode of a few KiB taking longer than this is a bug, not noise.
  @slow_decode_us 2_000_000

  @tag timeout: :infinity
  test "decode is total, fast and consistent on mutated and random input" do
    seconds =
      case Integer.parse(System.get_env("ZB_FUZZ_SECONDS", "")) do
        {n, ""} when n > 0 -> n
        _ -> @default_seconds
      end

    seed = ExUnit.configuration()[:seed]
    TermGenerator.seed({seed, 6, 6})
    deadline = System.monotonic_time(:millisecond) + seconds * 1000
    stats = run(deadline, %{cases: 0, ok: 0, error: 0, reasons: %{}, slowest_us: 0})

    assert stats.cases > 100, "only #{stats.cases} cases in #{seconds} s"
    assert stats.ok > 0 and stats.error > 0, inspect(stats)

    IO.puts(
      "\n[msgpack fuzz] #{stats.cases} inputs in #{seconds} s (seed #{seed}): " <>
        "#{stats.ok} decoded, #{stats.error} refused #{inspect(stats.reasons)}, " <>
        "slowest decode #{stats.slowest_us} us"
    )
  end

  defp run(deadline, stats) do
    if System.monotonic_time(:millisecond) >= deadline do
      stats
    else
      input = input()
      run(deadline, check(input, stats))
    end
  end

  # One input: a valid encoding, mutated (mostly), or plain random bytes.
  defp input do
    case :rand.uniform(10) do
      1 -> TermGenerator.bytes(:rand.uniform(64) - 1)
      2 -> hostile()
      _ -> mutate(enc(TermGenerator.term(:rand.uniform(30))), :rand.uniform(4) - 1)
    end
  end

  defp enc(term), do: term |> Msgpack.encode!() |> IO.iodata_to_binary()

  defp mutate(bin, 0), do: bin

  defp mutate(bin, n) do
    size = byte_size(bin)
    pos = if size == 0, do: 0, else: :rand.uniform(size) - 1

    bin =
      case :rand.uniform(8) do
        # flip one bit
        1 when size > 0 ->
          set_byte(bin, pos, bxor(:binary.at(bin, pos), 1 <<< (:rand.uniform(8) - 1)))

        # a random byte
        2 when size > 0 ->
          set_byte(bin, pos, :rand.uniform(256) - 1)

        # cut short
        3 ->
          binary_part(bin, 0, pos)

        # drop a byte
        4 when size > 0 ->
          binary_part(bin, 0, pos) <> binary_part(bin, pos + 1, size - pos - 1)

        # insert bytes
        5 ->
          binary_part(bin, 0, pos) <>
            TermGenerator.bytes(:rand.uniform(5)) <> binary_part(bin, pos, size - pos)

        # a header byte of every kind, with a huge length after it
        6 ->
          binary_part(bin, 0, pos) <> big_header() <> binary_part(bin, pos, size - pos)

        # splice in another encoding
        7 ->
          binary_part(bin, 0, pos) <>
            enc(TermGenerator.term(5)) <> binary_part(bin, pos, size - pos)

        # repeat a slice
        _ ->
          bin <> binary_part(bin, pos, size - pos)
      end

    mutate(bin, n - 1)
  end

  defp set_byte(bin, pos, byte) do
    <<head::binary-size(pos), _, tail::binary>> = bin
    <<head::binary, byte, tail::binary>>
  end

  # Headers announcing sizes near the largest the format allows.
  defp big_header do
    size32 = Enum.random([0xFFFF_FFFF, 0x8000_0000, 0x7FFF_FFFF, 0x0100_0000])
    size16 = Enum.random([0xFFFF, 0x8000])

    Enum.random([
      <<0xDC, size16::16>>,
      <<0xDD, size32::32>>,
      <<0xDE, size16::16>>,
      <<0xDF, size32::32>>,
      <<0xDB, size32::32>>,
      <<0xC6, size32::32>>,
      <<0xC9, size32::32, 1>>,
      <<0xDA, size16::16>>,
      <<0xC5, size16::16>>
    ])
  end

  # Inputs built to hurt: deep nesting, many small containers, huge counts.
  defp hostile do
    depth = Enum.random([10, 511, 512, 513, 5_000, 100_000])

    case :rand.uniform(5) do
      1 -> :binary.copy(<<0x91>>, depth) <> <<0xC0>>
      2 -> :binary.copy(<<0x81, 0xA1, ?k>>, depth) <> <<0xC0>>
      3 -> <<0xDD, 0xFFFF_FFFF::32>> <> :binary.copy(<<0x90>>, depth)
      4 -> <<0xDF, 0xFFFF_FFFF::32>> <> :binary.copy(<<0xC0>>, depth)
      5 -> :binary.copy(<<0xDC, 0xFF, 0xFF>>, depth)
    end
  end

  defp check(input, stats) do
    {us, result} = :timer.tc(fn -> safe(fn -> Msgpack.decode(input) end) end)
    prefix = safe(fn -> Msgpack.decode_prefix(input) end)

    if us > @slow_decode_us do
      flunk("decoding #{byte_size(input)} bytes took #{us} us: #{preview(input)}")
    end

    case prefix do
      {:ok, _term, rest} when is_binary(rest) -> :ok
      {:error, _} -> :ok
      other -> flunk("decode_prefix returned #{inspect(other)} for #{preview(input)}")
    end

    stats = %{stats | cases: stats.cases + 1, slowest_us: max(stats.slowest_us, us)}

    case result do
      {:ok, term} ->
        # whatever comes out encodes, and that encoding decodes to the same
        case Msgpack.encode(term) do
          {:ok, iodata} ->
            again = Msgpack.decode(IO.iodata_to_binary(iodata))

            unless again == {:ok, term} do
              flunk(
                "#{preview(input)} decoded to #{inspect(term, limit: 20)}, " <>
                  "whose encoding decodes to #{inspect(again, limit: 20)}"
              )
            end

          {:error, reason} ->
            flunk("#{preview(input)} decoded to a term that does not encode: #{inspect(reason)}")
        end

        # the same bytes followed by more come apart with decode_prefix
        case Msgpack.decode_prefix(input <> <<0xC0>>) do
          {:ok, ^term, <<0xC0>>} ->
            :ok

          other ->
            flunk("decode_prefix of #{preview(input)} <> nil: #{inspect(other, limit: 20)}")
        end

        %{stats | ok: stats.ok + 1}

      {:error, reason} ->
        key = if is_tuple(reason), do: elem(reason, 0), else: reason
        %{stats | error: stats.error + 1, reasons: Map.update(stats.reasons, key, 1, &(&1 + 1))}

      other ->
        flunk("decode returned #{inspect(other)} for #{preview(input)}")
    end
  end

  defp safe(fun) do
    fun.()
  rescue
    e -> {:raised, e}
  catch
    kind, value -> {:raised, {kind, value}}
  end

  defp preview(bin) do
    {shown, more} = if byte_size(bin) > 80, do: {binary_part(bin, 0, 80), "..."}, else: {bin, ""}
    "<<#{byte_size(bin)} bytes: #{Base.encode16(shown, case: :lower)}#{more}>>"
  end
end
