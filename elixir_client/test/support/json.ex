defmodule ZarrBridge.Test.JSON do
  @moduledoc false
  # A minimal JSON reader for test vectors (Elixir 1.14 has no JSON module).
  # Objects become maps with string keys, arrays lists, null nil; numbers
  # without a fraction or exponent become integers, others floats.

  @ws [?\s, ?\t, ?\n, ?\r]

  @spec decode!(binary) :: term
  def decode!(json) when is_binary(json) do
    {value, rest} = value(skip_ws(json))

    case skip_ws(rest) do
      "" ->
        value

      other ->
        raise ArgumentError,
              "trailing data in JSON: #{inspect(binary_part(other, 0, min(20, byte_size(other))))}"
    end
  end

  defp skip_ws(<<c, rest::binary>>) when c in @ws, do: skip_ws(rest)
  defp skip_ws(rest), do: rest

  defp value(<<?{, rest::binary>>), do: object(skip_ws(rest), [])
  defp value(<<?[, rest::binary>>), do: array(skip_ws(rest), [])
  defp value(<<?", rest::binary>>), do: string(rest, [])
  defp value(<<"true", rest::binary>>), do: {true, rest}
  defp value(<<"false", rest::binary>>), do: {false, rest}
  defp value(<<"null", rest::binary>>), do: {nil, rest}
  defp value(<<c, _::binary>> = bin) when c == ?- or c in ?0..?9, do: number(bin, [])
  defp value(other), do: bad(other)

  defp object(<<?}, rest::binary>>, []), do: {%{}, rest}

  defp object(<<?", rest::binary>>, acc) do
    {key, rest} = string(rest, [])
    <<?:, rest::binary>> = skip_ws(rest)
    {val, rest} = value(skip_ws(rest))
    acc = [{key, val} | acc]

    case skip_ws(rest) do
      <<?,, rest::binary>> -> object(skip_ws(rest), acc)
      <<?}, rest::binary>> -> {Map.new(acc), rest}
      other -> bad(other)
    end
  end

  defp object(other, _acc), do: bad(other)

  defp array(<<?], rest::binary>>, []), do: {[], rest}

  defp array(bin, acc) do
    {val, rest} = value(bin)
    acc = [val | acc]

    case skip_ws(rest) do
      <<?,, rest::binary>> -> array(skip_ws(rest), acc)
      <<?], rest::binary>> -> {Enum.reverse(acc), rest}
      other -> bad(other)
    end
  end

  defp string(<<?", rest::binary>>, acc), do: {IO.iodata_to_binary(Enum.reverse(acc)), rest}

  defp string(<<?\\, e, rest::binary>>, acc) when e in [?", ?\\, ?/],
    do: string(rest, [e | acc])

  defp string(<<?\\, ?b, rest::binary>>, acc), do: string(rest, [?\b | acc])
  defp string(<<?\\, ?f, rest::binary>>, acc), do: string(rest, [?\f | acc])
  defp string(<<?\\, ?n, rest::binary>>, acc), do: string(rest, [?\n | acc])
  defp string(<<?\\, ?r, rest::binary>>, acc), do: string(rest, [?\r | acc])
  defp string(<<?\\, ?t, rest::binary>>, acc), do: string(rest, [?\t | acc])

  defp string(<<"\\u", hi::binary-size(4), "\\u", lo::binary-size(4), rest::binary>> = bin, acc) do
    case {String.to_integer(hi, 16), String.to_integer(lo, 16)} do
      {h, l} when h in 0xD800..0xDBFF and l in 0xDC00..0xDFFF ->
        cp = 0x10000 + Bitwise.bsl(h - 0xD800, 10) + (l - 0xDC00)
        string(rest, [<<cp::utf8>> | acc])

      _ ->
        <<_::binary-size(6), rest::binary>> = bin
        string(rest, [<<String.to_integer(hi, 16)::utf8>> | acc])
    end
  end

  defp string(<<"\\u", hex::binary-size(4), rest::binary>>, acc),
    do: string(rest, [<<String.to_integer(hex, 16)::utf8>> | acc])

  defp string(<<c, rest::binary>>, acc) when c != ?\\, do: string(rest, [c | acc])
  defp string(other, _acc), do: bad(other)

  defp number(<<c, rest::binary>>, acc) when c in ?0..?9 or c in [?-, ?+, ?., ?e, ?E],
    do: number(rest, [c | acc])

  defp number(rest, acc) do
    text = acc |> Enum.reverse() |> List.to_string()

    if String.contains?(text, [".", "e", "E"]) do
      {float, ""} = Float.parse(text)
      {float, rest}
    else
      {String.to_integer(text), rest}
    end
  end

  defp bad(rest) do
    raise ArgumentError,
          "invalid JSON at #{inspect(binary_part(rest, 0, min(20, byte_size(rest))))}"
  end
end
