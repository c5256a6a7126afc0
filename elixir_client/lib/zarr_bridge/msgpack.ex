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

  alias ZarrBridge.Msgpack.Decoder

  # Errors travel up the recursion as a throw of {@tag, reason}; only the
  # public functions catch them (decoding: ZarrBridge.Msgpack.Decoder).
  @tag __MODULE__
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
    case Decoder.decode(binary, opts) do
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
    case Decoder.decode(binary, opts) do
      {:ok, {term, rest}} -> {:ok, term, rest}
      {:error, _reason} = error -> error
    end
  end

  def decode_prefix(_other, _opts), do: {:error, :not_a_binary}

  defp format({:unsupported_term, term}), do: "unsupported term " <> inspect(term, limit: 10)
  defp format({:integer_out_of_range, n}), do: "integer #{n} is outside -2^63..2^64-1"
  defp format({:too_large, n}), do: "size #{n} does not fit in 32 bits"
  defp format({:trailing_bytes, n}), do: "#{n} trailing byte(s) after the value"
  defp format({:invalid_byte, byte}), do: "invalid byte 0x" <> Integer.to_string(byte, 16)
  defp format(:truncated), do: "input ends in the middle of a value"
  defp format(:invalid_timestamp), do: "invalid timestamp extension"

  defp format({:too_many_elements, n}),
    do: "more than #{n} values in the arrays and maps of one frame"

  defp format(:too_deep),
    do: "arrays and maps nested deeper than #{Decoder.max_depth()} levels"

  defp format(:not_a_binary), do: "input is not a binary"
end
