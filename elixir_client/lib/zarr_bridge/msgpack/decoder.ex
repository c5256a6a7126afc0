defmodule ZarrBridge.Msgpack.Decoder do
  @moduledoc false
  # The decoding half of ZarrBridge.Msgpack (its docs say what maps to
  # what): one value at the head of a binary, with a depth limit and an
  # element budget; errors travel up the recursion as a throw of
  # {__MODULE__, reason} and come out as {:error, reason}.

  @tag __MODULE__
  @max_depth 512
  @max_elements 1_048_576
  # The process dictionary key holding the values still allowed in the
  # decode under way (see count/1).
  @budget {__MODULE__, :budget}
  @max_nsec 999_999_999

  @doc "The deepest nesting of arrays and maps a decode takes."
  @spec max_depth() :: pos_integer
  def max_depth, do: @max_depth

  @doc "`{:ok, {term, rest}}` for the first value of `binary`, or `{:error, reason}`."
  @spec decode(binary, keyword) :: {:ok, {term, binary}} | {:error, term}
  def decode(binary, opts), do: with_budget(opts, fn -> value(binary, 0) end)

  # Runs `fun` with the element budget of `opts` in the process dictionary
  # (its previous value is restored after: nothing is left behind), and
  # catches the decoder's throws.
  defp with_budget(opts, fun) do
    limit = max_elements!(opts)
    previous = Process.put(@budget, {limit, limit})

    try do
      {:ok, fun.()}
    catch
      :throw, {@tag, reason} -> {:error, reason}
    after
      if previous == nil, do: Process.delete(@budget), else: Process.put(@budget, previous)
    end
  end

  defp max_elements!(opts) do
    case Keyword.get(opts, :max_elements, @max_elements) do
      n when is_integer(n) and n > 0 ->
        n

      other ->
        raise ArgumentError, "max_elements must be a positive integer, got: #{inspect(other)}"
    end
  end

  # Spends `n` of the decode's element budget; throws past it. Only
  # container headers call it, so scalars cost nothing.
  defp count(0), do: :ok

  defp count(n) do
    {limit, left} = Process.get(@budget)

    if n > left,
      do: throw({@tag, {:too_many_elements, limit}}),
      else: Process.put(@budget, {limit, left - n})
  end

  # value/2 decodes one value at the head of the binary and returns
  # {term, rest}; `rest` is a sub-binary, so decoding is linear in the input.
  # Every byte but 0xC1 starts a value, so a binary that matches none of the
  # complete patterns below is either 0xC1 or too short.

  # positive fixint, fixmap, fixarray, fixstr
  defp value(<<0::1, n::7, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0b1000::4, n::4, rest::binary>>, depth), do: map(rest, n, depth)
  defp value(<<0b1001::4, n::4, rest::binary>>, depth), do: array(rest, n, depth)

  defp value(<<0b101::3, n::5, s::binary-size(n), rest::binary>>, _depth),
    do: {:binary.copy(s), rest}

  defp value(<<0xC0, rest::binary>>, _depth), do: {nil, rest}
  defp value(<<0xC2, rest::binary>>, _depth), do: {false, rest}
  defp value(<<0xC3, rest::binary>>, _depth), do: {true, rest}

  # bin 8/16/32: the payload stays a sub-binary of the input (no copy).
  defp value(<<0xC4, n::8, b::binary-size(n), rest::binary>>, _depth), do: {{:bin, b}, rest}
  defp value(<<0xC5, n::16, b::binary-size(n), rest::binary>>, _depth), do: {{:bin, b}, rest}
  defp value(<<0xC6, n::32, b::binary-size(n), rest::binary>>, _depth), do: {{:bin, b}, rest}

  # ext 8/16/32
  defp value(<<0xC7, n::8, type::signed-8, d::binary-size(n), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xC8, n::16, type::signed-8, d::binary-size(n), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xC9, n::32, type::signed-8, d::binary-size(n), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  # float 32/64: a float segment does not match NaN or ±Inf, which fall
  # through to the clauses after it.
  defp value(<<0xCA, f::float-32, rest::binary>>, _depth), do: {f, rest}

  defp value(<<0xCA, sign::1, _::8, frac::23, rest::binary>>, _depth),
    do: {nonfinite(sign, frac), rest}

  defp value(<<0xCB, f::float-64, rest::binary>>, _depth), do: {f, rest}

  defp value(<<0xCB, sign::1, _::11, frac::52, rest::binary>>, _depth),
    do: {nonfinite(sign, frac), rest}

  # uint 8/16/32/64, int 8/16/32/64
  defp value(<<0xCC, n::8, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xCD, n::16, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xCE, n::32, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xCF, n::64, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xD0, n::signed-8, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xD1, n::signed-16, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xD2, n::signed-32, rest::binary>>, _depth), do: {n, rest}
  defp value(<<0xD3, n::signed-64, rest::binary>>, _depth), do: {n, rest}

  # fixext 1/2/4/8/16
  defp value(<<0xD4, type::signed-8, d::binary-size(1), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xD5, type::signed-8, d::binary-size(2), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xD6, type::signed-8, d::binary-size(4), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xD7, type::signed-8, d::binary-size(8), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  defp value(<<0xD8, type::signed-8, d::binary-size(16), rest::binary>>, _depth),
    do: {ext(type, d), rest}

  # str 8/16/32
  defp value(<<0xD9, n::8, s::binary-size(n), rest::binary>>, _depth), do: {:binary.copy(s), rest}

  defp value(<<0xDA, n::16, s::binary-size(n), rest::binary>>, _depth),
    do: {:binary.copy(s), rest}

  defp value(<<0xDB, n::32, s::binary-size(n), rest::binary>>, _depth),
    do: {:binary.copy(s), rest}

  # array 16/32, map 16/32
  defp value(<<0xDC, n::16, rest::binary>>, depth), do: array(rest, n, depth)
  defp value(<<0xDD, n::32, rest::binary>>, depth), do: array(rest, n, depth)
  defp value(<<0xDE, n::16, rest::binary>>, depth), do: map(rest, n, depth)
  defp value(<<0xDF, n::32, rest::binary>>, depth), do: map(rest, n, depth)

  # negative fixint
  defp value(<<0b111::3, n::5, rest::binary>>, _depth), do: {n - 32, rest}

  defp value(<<0xC1, _::binary>>, _depth), do: throw({@tag, {:invalid_byte, 0xC1}})
  defp value(_short, _depth), do: throw({@tag, :truncated})

  defp nonfinite(_sign, frac) when frac != 0, do: :nan
  defp nonfinite(0, 0), do: :infinity
  defp nonfinite(1, 0), do: :neg_infinity

  defp ext(-1, data), do: timestamp(data)
  defp ext(type, data), do: {:ext, type, data}

  defp timestamp(<<sec::32>>), do: {:timestamp, sec, 0}
  defp timestamp(<<nsec::30, sec::34>>) when nsec <= @max_nsec, do: {:timestamp, sec, nsec}

  defp timestamp(<<nsec::32, sec::signed-64>>) when nsec <= @max_nsec,
    do: {:timestamp, sec, nsec}

  defp timestamp(_data), do: throw({@tag, :invalid_timestamp})

  # A header may announce up to 2^32-1 items; each item takes at least one
  # byte, so a header announcing more than the bytes left is :truncated at
  # once. Then the items are counted against the element budget.
  defp array(rest, n, _depth) when n > byte_size(rest), do: throw({@tag, :truncated})

  defp array(rest, n, depth) do
    count(n)
    array_items(rest, n, deeper(depth), [])
  end

  defp array_items(rest, 0, _depth, acc), do: {:lists.reverse(acc), rest}

  defp array_items(rest, n, depth, acc) do
    {item, rest} = value(rest, depth)
    array_items(rest, n - 1, depth, [item | acc])
  end

  defp map(rest, n, _depth) when 2 * n > byte_size(rest), do: throw({@tag, :truncated})

  defp map(rest, n, depth) do
    count(2 * n)
    map_pairs(rest, n, deeper(depth), [])
  end

  # On duplicate keys the last one on the wire wins, as in most decoders.
  defp map_pairs(rest, 0, _depth, []), do: {%{}, rest}
  defp map_pairs(rest, 0, _depth, acc), do: {:maps.from_list(:lists.reverse(acc)), rest}

  defp map_pairs(rest, n, depth, acc) do
    {key, rest} = value(rest, depth)
    {val, rest} = value(rest, depth)
    map_pairs(rest, n - 1, depth, [{key, val} | acc])
  end

  defp deeper(depth) when depth < @max_depth, do: depth + 1
  defp deeper(_depth), do: throw({@tag, :too_deep})
end
