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
      `:nan`, `:infinity`, `:neg_infinity`, complex as `{re, im}`;
    * `order` - `"C"` or `"F"`;
    * `dimension_separator` - `"."`, `"/"` or `nil`;
    * `dimension_names` - v3: a list of names (`nil` entries allowed) or `nil`;
    * `attributes` - the user attributes, a map with string keys.

  A `%ZarrBridge.Metadata{}` is a snapshot taken when the array was opened or
  created; see `ZarrBridge.Array.refresh/2`.
  """

  alias ZarrBridge.{CodecSpec, Dtype, Error}

  defstruct [
    :zarr_format,
    :shape,
    :chunks,
    :dtype,
    :compressor,
    :fill_value,
    :order,
    :dimension_separator,
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
          dtype: Dtype.t(),
          compressor: atom | nil,
          compressor_config: keyword,
          filters: [{atom, keyword}] | nil,
          codecs: [map] | nil,
          fill_value: term,
          order: String.t(),
          dimension_separator: String.t() | nil,
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

  defp tuple_or_nil(list) when is_list(list), do: List.to_tuple(list)
  defp tuple_or_nil(_), do: nil

  defp filters(list) when is_list(list) do
    for %{"id" => id} = config when is_binary(id) <- list, do: CodecSpec.from_config(config)
  end

  defp filters(_), do: nil

  defp fill_value([re, im], dtype) when dtype in [:complex64, :complex128], do: {re, im}
  defp fill_value(value, _dtype), do: plain(value)

  # Bins (for bytes dtypes) come back as {:bin, data}.
  defp plain({:bin, data}), do: data
  defp plain(list) when is_list(list), do: Enum.map(list, &plain/1)
  defp plain(%{} = map), do: Map.new(map, fn {k, v} -> {k, plain(v)} end)
  defp plain(value), do: value
end
