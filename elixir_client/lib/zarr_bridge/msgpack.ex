defmodule ZarrBridge.Msgpack do
  @moduledoc """
  A pure msgpack codec: no process, no side effects, no dependencies.

  `encode/1` returns iodata, `decode/1` takes one whole frame (a binary that
  holds exactly one msgpack value). Both return `{:ok, _}` or
  `{:error, reason}`, and come with a raising `!` variant.

  ## Term mapping

  | Elixir                                    | msgpack                                 |
  |-------------------------------------------|-----------------------------------------|
  | `nil`, `true`, `false`                    | nil, true, false                        |
  | integer in `-2^63..2^64-1`                | int (smallest form)                     |
  | float                                     | float 64 (decoding also reads float 32) |
  | `:nan`, `:infinity`, `:neg_infinity`      | float NaN, +Inf, -Inf                   |
  | binary                                    | str (smallest form, UTF-8 not checked)  |
  | any other atom                            | str of `Atom.to_string/1` (encode only) |
  | `{:bin, iodata}`                          | bin (decodes to `{:bin, binary}`)       |
  | list                                      | array                                   |
  | map (not a struct), keys of any term      | map                                     |
  | `{:ext, type, iodata}`, type `-128..127`  | ext (decodes to `{:ext, type, binary}`) |
  | `{:timestamp, seconds, nanoseconds}`      | ext type -1, smallest of its 3 forms    |

  Anything else (tuples, structs, pids, functions, improper lists, bitstrings
  that are not binaries) gives `{:error, {:unsupported_term, term}}`.

  Decoding never creates atoms. The payload of a decoded bin (and of an ext)
  is a sub-binary of the input, so large data frames are not copied; use
  `:binary.copy/1` if you keep a small part of a large frame for long.
  Decoded strings are copied, so that map keys and metadata do not keep the
  whole frame alive.

  ## Error reasons

    * `:truncated` - the input ends in the middle of a value;
    * `{:trailing_bytes, n}` - `n` bytes follow the value (`decode/1` only);
    * `{:invalid_byte, byte}` - a byte that starts no msgpack value (`0xC1`);
    * `:invalid_timestamp` - an ext of type -1 that is not a valid timestamp;
    * `:too_deep` - arrays and maps nested deeper than 512 levels (an
      empty array or map counts as a level);
    * `{:too_many_elements, limit}` - the input holds more than `limit`
      values inside its arrays and maps (see "Element limit" below);
    * `:not_a_binary` - `decode/1` was given something other than a binary;
    * `{:unsupported_term, term}` - a term with no msgpack mapping;
    * `{:integer_out_of_range, n}` - an integer outside `-2^63..2^64-1`;
    * `{:too_large, size}` - a str, bin, ext, array or map with `2^32` or
      more bytes or elements.

  ## Element limit

  A frame of a few megabytes can announce millions of tiny values (16 MB
  of empty arrays is 16 million lists). So decoding counts the values
  inside arrays and maps as their headers are read: an array of `n` items
  adds `n`, a map of `n` entries `2n`. Past the limit (`1_048_576` values
  by default, the per-frame limit of PROTOCOL.md §1; the `:max_elements`
  option of `decode/2` and `decode_prefix/2`) decoding stops at once with
  `{:error, {:too_many_elements, limit}}`, so what it builds stays bounded.

  ## Examples

      iex> {:ok, iodata} = ZarrBridge.Msgpack.encode(%{"a" => [1, -1, {:bin, "xy"}]})
      iex> IO.iodata_to_binary(iodata)
      <<0x81, 0xA1, ?a, 0x93, 0x01, 0xFF, 0xC4, 0x02, ?x, ?y>>

      iex> ZarrBridge.Msgpack.decode(<<0x92, 0xC0, 0xCB, 0x7F, 0xF8, 0::48>>)
      {:ok, [nil, :nan]}

      iex> ZarrBridge.Msgpack.decode(<<0x92, 0x01>>)
      {:error, :truncated}

      iex> ZarrBridge.Msgpack.encode({1, 2})
      {:error, {:unsupported_term, {1, 2}}}
  """

  @typedoc "A term that `encode/1` accepts (see the module doc)."
  @type encodable ::
          nil
          | boolean
          | integer
          | float
          | :nan
          | :infinity
          | :neg_infinity
          | atom
          | binary
          | {:bin, iodata}
          | {:ext, -128..127, iodata}
          | {:timestamp, integer, 0..999_999_999}
          | [encodable]
          | %{optional(encodable) => encodable}

  @typedoc "A term that `decode/1` returns."
  @type decoded ::
          nil
          | boolean
          | integer
          | float
          | :nan
          | :infinity
          | :neg_infinity
          | binary
          | {:bin, binary}
          | {:ext, -128..127, binary}
          | {:timestamp, integer, 0..999_999_999}
          | [decoded]
          | %{optional(decoded) => decoded}

  @typedoc "Why encoding or decoding failed (see the module doc)."
  @type reason ::
          :truncated
          | :invalid_timestamp
          | :too_deep
          | :not_a_binary
          | {:trailing_bytes, pos_integer}
          | {:invalid_byte, byte}
          | {:unsupported_term, term}
          | {:integer_out_of_range, integer}
          | {:too_large, non_neg_integer}
          | {:too_many_elements, pos_integer}

  @typedoc "Options of `decode/2` and `decode_prefix/2`."
  @type decode_option :: {:max_elements, pos_integer}

  # Errors travel up the recursion as a throw of {@tag, reason}; only the
  # public functions catch them.
  @tag __MODULE__
  @max_depth 512
  @max_elements 1_048_576
  # The process dictionary key holding the values still allowed in the
  # decode under way (see count/1).
  @budget {__MODULE__, :budget}
  @max_nsec 999_999_999

  @min_int -0x8000_0000_0000_0000
  @max_uint 0xFFFF_FFFF_FFFF_FFFF
  @max_int64 0x7FFF_FFFF_FFFF_FFFF

  ## Encoding

  @doc """
  Encodes `term` as msgpack iodata.

  Large binaries given as `{:bin, iodata}` are kept as they are in the
  returned iodata, not copied.

  ## Examples

      iex> {:ok, iodata} = ZarrBridge.Msgpack.encode([1, 300, "hi", nil])
      iex> IO.iodata_to_binary(iodata)
      <<0x94, 0x01, 0xCD, 0x01, 0x2C, 0xA2, ?h, ?i, 0xC0>>

      iex> ZarrBridge.Msgpack.encode(-(2 ** 63) - 1)
      {:error, {:integer_out_of_range, -9223372036854775809}}
  """
  @spec encode(encodable) :: {:ok, iodata} | {:error, reason}
  def encode(term) do
    {:ok, enc(term)}
  catch
    :throw, {@tag, reason} -> {:error, reason}
  end

  @doc """
  Same as `encode/1`, but returns the iodata itself, or raises
  `ArgumentError`.

  ## Examples

      iex> ZarrBridge.Msgpack.encode!(:infinity) |> IO.iodata_to_binary()
      <<0xCB, 0x7F, 0xF0, 0, 0, 0, 0, 0, 0>>
  """
  @spec encode!(encodable) :: iodata
  def encode!(term) do
    case encode(term) do
      {:ok, iodata} -> iodata
      {:error, reason} -> raise ArgumentError, "cannot encode to msgpack: " <> format(reason)
    end
  end

  defp enc(nil), do: <<0xC0>>
  defp enc(false), do: <<0xC2>>
  defp enc(true), do: <<0xC3>>
  defp enc(n) when is_integer(n), do: enc_int(n)
  defp enc(f) when is_float(f), do: <<0xCB, f::float-64>>
  defp enc(:nan), do: <<0xCB, 0x7FF8_0000_0000_0000::64>>
  defp enc(:infinity), do: <<0xCB, 0x7FF0_0000_0000_0000::64>>
  defp enc(:neg_infinity), do: <<0xCB, 0xFFF0_0000_0000_0000::64>>
  defp enc(atom) when is_atom(atom), do: enc_str(Atom.to_string(atom))
  defp enc(bin) when is_binary(bin), do: enc_str(bin)
  defp enc(list) when is_list(list), do: enc_list(list, list, 0, [])
  defp enc(%_{} = struct), do: unsupported(struct)
  defp enc(map) when is_map(map), do: enc_map(map)
  defp enc({:bin, data} = term), do: enc_bin(data, term)

  defp enc({:ext, type, data} = term) when is_integer(type) and type in -128..127,
    do: enc_ext(type, data, term)

  defp enc({:timestamp, sec, nsec} = term)
       when is_integer(sec) and is_integer(nsec) and nsec in 0..@max_nsec,
       do: enc_timestamp(sec, nsec, term)

  defp enc(other), do: unsupported(other)

  defp enc_int(n) when n >= 0 do
    cond do
      n < 0x80 -> <<n>>
      n <= 0xFF -> <<0xCC, n>>
      n <= 0xFFFF -> <<0xCD, n::16>>
      n <= 0xFFFF_FFFF -> <<0xCE, n::32>>
      n <= @max_uint -> <<0xCF, n::64>>
      true -> throw({@tag, {:integer_out_of_range, n}})
    end
  end

  defp enc_int(n) do
    cond do
      n >= -32 -> <<n::signed-8>>
      n >= -0x80 -> <<0xD0, n::signed-8>>
      n >= -0x8000 -> <<0xD1, n::signed-16>>
      n >= -0x8000_0000 -> <<0xD2, n::signed-32>>
      n >= @min_int -> <<0xD3, n::signed-64>>
      true -> throw({@tag, {:integer_out_of_range, n}})
    end
  end

  defp enc_str(s) do
    case byte_size(s) do
      # Small strings: one small binary is cheaper than an iolist.
      n when n < 32 -> <<0xA0 + n, s::binary>>
      n when n < 64 -> <<0xD9, n, s::binary>>
      n when n <= 0xFF -> [<<0xD9, n>>, s]
      n when n <= 0xFFFF -> [<<0xDA, n::16>>, s]
      n when n <= 0xFFFF_FFFF -> [<<0xDB, n::32>>, s]
      n -> throw({@tag, {:too_large, n}})
    end
  end

  defp enc_bin(data, term) do
    case iodata_size(data, term) do
      n when n <= 0xFF -> [<<0xC4, n>>, data]
      n when n <= 0xFFFF -> [<<0xC5, n::16>>, data]
      n when n <= 0xFFFF_FFFF -> [<<0xC6, n::32>>, data]
      n -> throw({@tag, {:too_large, n}})
    end
  end

  defp enc_ext(type, data, term) do
    case iodata_size(data, term) do
      1 -> [<<0xD4, type::signed-8>>, data]
      2 -> [<<0xD5, type::signed-8>>, data]
      4 -> [<<0xD6, type::signed-8>>, data]
      8 -> [<<0xD7, type::signed-8>>, data]
      16 -> [<<0xD8, type::signed-8>>, data]
      n when n <= 0xFF -> [<<0xC7, n, type::signed-8>>, data]
      n when n <= 0xFFFF -> [<<0xC8, n::16, type::signed-8>>, data]
      n when n <= 0xFFFF_FFFF -> [<<0xC9, n::32, type::signed-8>>, data]
      n -> throw({@tag, {:too_large, n}})
    end
  end

  defp enc_timestamp(sec, 0, _term) when sec in 0..0xFFFF_FFFF,
    do: <<0xD6, -1::signed-8, sec::32>>

  defp enc_timestamp(sec, nsec, _term) when sec in 0..0x3_FFFF_FFFF,
    do: <<0xD7, -1::signed-8, nsec::30, sec::34>>

  defp enc_timestamp(sec, nsec, _term) when sec in @min_int..@max_int64,
    do: <<0xC7, 12, -1::signed-8, nsec::32, sec::signed-64>>

  defp enc_timestamp(_sec, _nsec, term), do: unsupported(term)

  defp iodata_size(data, _term) when is_binary(data), do: byte_size(data)

  defp iodata_size(data, term) when is_list(data) do
    :erlang.iolist_size(data)
  rescue
    ArgumentError -> unsupported(term)
  end

  defp iodata_size(_data, term), do: unsupported(term)

  # One pass: encode the items and count them; an improper tail is an error.
  defp enc_list([item | tail], list, count, acc),
    do: enc_list(tail, list, count + 1, [enc(item) | acc])

  defp enc_list([], _list, count, acc), do: [array_header(count) | :lists.reverse(acc)]
  defp enc_list(_improper_tail, list, _count, _acc), do: unsupported(list)

  defp array_header(n) when n < 16, do: <<0x90 + n>>
  defp array_header(n) when n <= 0xFFFF, do: <<0xDC, n::16>>
  defp array_header(n) when n <= 0xFFFF_FFFF, do: <<0xDD, n::32>>
  defp array_header(n), do: throw({@tag, {:too_large, n}})

  defp enc_map(map) do
    [map_header(map_size(map)) | Enum.map(map, fn {key, value} -> [enc(key), enc(value)] end)]
  end

  defp map_header(n) when n < 16, do: <<0x80 + n>>
  defp map_header(n) when n <= 0xFFFF, do: <<0xDE, n::16>>
  defp map_header(n) when n <= 0xFFFF_FFFF, do: <<0xDF, n::32>>
  defp map_header(n), do: throw({@tag, {:too_large, n}})

  defp unsupported(term), do: throw({@tag, {:unsupported_term, term}})

  ## Decoding

  @doc """
  Decodes `binary`, which must hold exactly one msgpack value.

  Never raises: malformed, truncated or random input gives
  `{:error, reason}`. Option: `max_elements:` (default `1_048_576`), the
  most values the arrays and maps of the input may hold (see "Element
  limit" above); an invalid option value raises `ArgumentError`.

  ## Examples

      iex> ZarrBridge.Msgpack.decode(<<0x82, 0xA1, ?a, 0x01, 0xA1, ?b, 0xC4, 0x01, 0xFF>>)
      {:ok, %{"a" => 1, "b" => {:bin, <<0xFF>>}}}

      iex> ZarrBridge.Msgpack.decode(<<0x01, 0x02, 0x03>>)
      {:error, {:trailing_bytes, 2}}

      iex> ZarrBridge.Msgpack.decode(<<0xC1>>)
      {:error, {:invalid_byte, 0xC1}}
  """
  @spec decode(binary, [decode_option]) :: {:ok, decoded} | {:error, reason}
  def decode(binary, opts \\ [])

  def decode(binary, opts) when is_binary(binary) do
    case with_budget(opts, fn -> value(binary, 0) end) do
      {:ok, {term, <<>>}} -> {:ok, term}
      {:ok, {_term, rest}} -> {:error, {:trailing_bytes, byte_size(rest)}}
      {:error, _reason} = error -> error
    end
  end

  def decode(_other, _opts), do: {:error, :not_a_binary}

  @doc """
  Same as `decode/2`, but returns the term itself, or raises `ArgumentError`.

  ## Examples

      iex> ZarrBridge.Msgpack.decode!(<<0xD6, 0xFF, 0, 0, 0, 1>>)
      {:timestamp, 1, 0}
  """
  @spec decode!(binary, [decode_option]) :: decoded
  def decode!(binary, opts \\ []) do
    case decode(binary, opts) do
      {:ok, term} -> term
      {:error, reason} -> raise ArgumentError, "cannot decode msgpack: " <> format(reason)
    end
  end

  @doc """
  Decodes the first msgpack value of `binary` and returns the bytes after it.
  Takes the options of `decode/2`.

  ## Examples

      iex> ZarrBridge.Msgpack.decode_prefix(<<0x01, 0x02, 0x03>>)
      {:ok, 1, <<0x02, 0x03>>}

      iex> ZarrBridge.Msgpack.decode_prefix(<<>>)
      {:error, :truncated}
  """
  @spec decode_prefix(binary, [decode_option]) :: {:ok, decoded, binary} | {:error, reason}
  def decode_prefix(binary, opts \\ [])

  def decode_prefix(binary, opts) when is_binary(binary) do
    case with_budget(opts, fn -> value(binary, 0) end) do
      {:ok, {term, rest}} -> {:ok, term, rest}
      {:error, _reason} = error -> error
    end
  end

  def decode_prefix(_other, _opts), do: {:error, :not_a_binary}

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

  defp format({:unsupported_term, term}), do: "unsupported term " <> inspect(term, limit: 10)
  defp format({:integer_out_of_range, n}), do: "integer #{n} is outside -2^63..2^64-1"
  defp format({:too_large, n}), do: "size #{n} does not fit in 32 bits"
  defp format({:trailing_bytes, n}), do: "#{n} trailing byte(s) after the value"
  defp format({:invalid_byte, byte}), do: "invalid byte 0x" <> Integer.to_string(byte, 16)
  defp format(:truncated), do: "input ends in the middle of a value"
  defp format(:invalid_timestamp), do: "invalid timestamp extension"

  defp format({:too_many_elements, n}),
    do: "more than #{n} values in the arrays and maps of one frame"

  defp format(:too_deep), do: "arrays and maps nested deeper than #{@max_depth} levels"
  defp format(:not_a_binary), do: "input is not a binary"
end
