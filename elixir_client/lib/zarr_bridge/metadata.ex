defmodule ZarrBridge.Metadata do
  @moduledoc """
  The metadata of a Zarr array (v2 or v3), as Elixir terms.

  Built from the metadata the sidecar reports (`protocol/PROTOCOL.md` §7):

    * `zarr_format` - `2` or `3`;
    * `shape`, `chunks` - tuples; for a sharded v3 array `chunks` is the inner
      chunk shape and `shards` the shard shape (otherwise `shards` is `nil`);
    * `dtype` - the Elixir dtype (see `ZarrBridge.NDArray`), e.g. `:float64`;
    * `compressor` - the compressor as an atom (`:blosc`, `:zlib`, `:zstd`,
      `:bz2`, …) or `nil` for none; for v3 it is the array's bytes-to-bytes
      codec. `compressor_config` - its options as a keyword list sorted by
      key, e.g. `[blocksize: 0, clevel: 3, cname: "zstd", shuffle: 1]` or
      `[level: 5]` (`[]` when there is no compressor). For v3, options are
      the codec's configuration as zarr-python writes it (blosc's `shuffle`
      is then a string such as `"shuffle"`);
    * `filters` - `nil` or a list of `{atom, keyword}`, e.g.
      `[{:delta, [astype: "<i4", dtype: "<i4"]}]`;
    * `codecs` - v3 only: the full codec list as JSON maps with string keys
      (`nil` for v2);
    * `fill_value` - an element value of the dtype: NaN and the infinities as
      `:nan`, `:infinity`, `:neg_infinity`, complex as `{re, im}`, NaT as
      `-9223372036854775808`, a structured record as a map of field values;
    * `order` - `"C"` or `"F"`;
    * `dimension_separator` - `"."`, `"/"` or `nil`;
    * `chunk_key_encoding` - how chunk coordinates become store keys:
      `{:default, sep}` (v3's default: `c/0/1`) or `{:v2, sep}` (`0.1`, as
      in every v2 array); see `chunk_key/2`;
    * `dimension_names` - v3: a list of names (`nil` entries allowed) or `nil`;
    * `attributes` - the user attributes, a map with string keys.

  A `%ZarrBridge.Metadata{}` is a snapshot taken when the array was opened or
  created; see `ZarrBridge.Array.refresh/2`.
  """

  alias ZarrBridge.{CodecSpec, Dtype, Error, NDArray}

  defstruct [
    :zarr_format,
    :shape,
    :chunks,
    :dtype,
    :compressor,
    :fill_value,
    :order,
    :dimension_separator,
    :chunk_key_encoding,
    :dimension_names,
    :shards,
    :filters,
    :codecs,
    compressor_config: [],
    attributes: %{}
  ]

  @type t :: %__MODULE__{
          zarr_format: 2 | 3,
          shape: tuple,
          chunks: tuple,
          dtype: NDArray.dtype(),
          compressor: atom | nil,
          compressor_config: keyword,
          filters: [{atom, keyword}] | nil,
          codecs: [map] | nil,
          fill_value: term,
          order: String.t(),
          dimension_separator: String.t() | nil,
          chunk_key_encoding: {:default | :v2, String.t()},
          dimension_names: [String.t() | nil] | nil,
          attributes: map,
          shards: tuple | nil
        }

  @doc """
  Builds the struct from the sidecar's metadata map (string keys).

  Errors: `:unsupported_dtype` for a dtype this client does not know,
  `:invalid_metadata` for a map that lacks the required keys.
  """
  @spec from_wire(map) :: {:ok, t} | {:error, Error.t()}
  def from_wire(
        %{"zarr_format" => format, "shape" => shape, "chunks" => chunks, "dtype" => wire} = meta
      )
      when format in [2, 3] and is_list(shape) and is_list(chunks) do
    with {:ok, dtype} <- Dtype.from_wire(wire) do
      {compressor, compressor_config} =
        case Map.get(meta, "compressor") do
          %{"id" => id} = config when is_binary(id) -> CodecSpec.from_config(config)
          _ -> {nil, []}
        end

      {:ok,
       %__MODULE__{
         zarr_format: format,
         shape: List.to_tuple(shape),
         chunks: List.to_tuple(chunks),
         shards: tuple_or_nil(Map.get(meta, "shards")),
         dtype: dtype,
         compressor: compressor,
         compressor_config: compressor_config,
         filters: filters(Map.get(meta, "filters")),
         codecs: plain(Map.get(meta, "codecs")),
         fill_value: fill_value(Map.get(meta, "fill_value"), dtype),
         order: Map.get(meta, "order") || "C",
         dimension_separator: Map.get(meta, "dimension_separator"),
         chunk_key_encoding: chunk_key_encoding(meta, format),
         dimension_names: Map.get(meta, "dimension_names"),
         attributes: plain(Map.get(meta, "attributes")) || %{}
       }}
    end
  end

  def from_wire(other) do
    {:error,
     %Error{
       code: :invalid_metadata,
       message: "the sidecar sent metadata this client cannot read: #{inspect(other, limit: 10)}",
       details: %{metadata: other}
     }}
  end

  @doc """
  The store key of the chunk (or, for a sharded array, the shard) at grid
  coordinates `coords`, relative to the array, by the array's chunk key
  encoding: `{0, 1}` is `"c/0/1"` for v3's default encoding and `"0.1"` for
  v2's. A 0-d array's one chunk is `"c"` or `"0"`.
  """
  @spec chunk_key(t, tuple) :: String.t()
  def chunk_key(%__MODULE__{chunk_key_encoding: {name, sep}}, coords) when is_tuple(coords) do
    parts = Enum.map(Tuple.to_list(coords), &Integer.to_string/1)

    case {name, parts} do
      {:default, parts} -> Enum.join(["c" | parts], sep)
      {:v2, []} -> "0"
      {:v2, parts} -> Enum.join(parts, sep)
    end
  end

  @doc """
  A fill value as it travels on the wire for `dtype` (PROTOCOL.md §7):
  `{re, im}` becomes `[re, im]`, fixed and variable-length bytes travel as
  msgpack bin, and a structured record (a map of field values) as its packed
  little-endian record bytes (bin).
  """
  @spec fill_value_to_wire(term, NDArray.dtype()) :: {:ok, term} | {:error, Error.t()}
  def fill_value_to_wire(value, dtype) do
    {:ok, to_wire(value, dtype)}
  catch
    {:bad_fill, value} ->
      {:error,
       %Error{
         code: :invalid_params,
         message: "fill_value #{inspect(value, limit: 5)} does not fit dtype #{inspect(dtype)}",
         details: %{param: "fill_value", value: value, dtype: dtype}
       }}
  end

  defp to_wire(nil, _dtype), do: nil
  defp to_wire({re, im}, dtype) when dtype in [:complex64, :complex128], do: [re, im]
  defp to_wire(value, :bytes) when is_binary(value), do: {:bin, value}
  defp to_wire(value, {:fixed_bytes, _}) when is_binary(value), do: {:bin, value}

  defp to_wire(%{} = record, [_ | _] = fields) do
    case NDArray.from_list([record], {}, fields) do
      {:ok, %NDArray{data: bytes}} -> {:bin, bytes}
      {:error, _} -> throw({:bad_fill, record})
    end
  end

  defp to_wire(value, [_ | _]), do: throw({:bad_fill, value})
  defp to_wire(value, _dtype), do: value

  # The wire metadata names the encoding when the sidecar knows it; without
  # it, a v2 array uses v2 keys and a v3 array the default encoding.
  defp chunk_key_encoding(meta, format) do
    sep = Map.get(meta, "dimension_separator")

    case Map.get(meta, "chunk_key_encoding") do
      %{"name" => name} = cke when name in ["default", "v2"] ->
        atom = if name == "v2", do: :v2, else: :default
        {atom, Map.get(cke, "separator") || sep || default_sep(name)}

      _ when format == 2 ->
        {:v2, sep || "."}

      _ ->
        {:default, sep || "/"}
    end
  end

  defp default_sep("default"), do: "/"
  defp default_sep("v2"), do: "."

  defp tuple_or_nil(list) when is_list(list), do: List.to_tuple(list)
  defp tuple_or_nil(_), do: nil

  defp filters(list) when is_list(list) do
    for %{"id" => id} = config when is_binary(id) <- list, do: CodecSpec.from_config(config)
  end

  defp filters(_), do: nil

  @doc false
  # A wire element (fill value) as the Elixir element of `dtype`.
  @spec fill_value(term, NDArray.dtype()) :: term
  def fill_value([re, im], dtype) when dtype in [:complex64, :complex128], do: {re, im}

  def fill_value({:bin, record}, [_ | _] = fields) do
    if byte_size(record) == Dtype.itemsize(fields),
      do: hd(NDArray.decode(record, fields)),
      else: record
  end

  def fill_value(value, _dtype), do: plain(value)

  # Bins (for bytes dtypes) come back as {:bin, data}.
  defp plain({:bin, data}), do: data
  defp plain(list) when is_list(list), do: Enum.map(list, &plain/1)
  defp plain(%{} = map), do: Map.new(map, fn {k, v} -> {k, plain(v)} end)
  defp plain(value), do: value
end
