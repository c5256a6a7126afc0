defmodule ZarrBridge.Codecs do
  @moduledoc """
  Raw codec operations: any numcodecs codec the sidecar has, on binaries.

  Use it to check which codecs exist, to compress or decompress bytes, and
  to run the whole codec step of one Zarr chunk (filters and compressor for
  v2, the codec list for v3) when you do your own store I/O.

  ## Codecs

  A codec is given in one of these forms:

    * an atom: `:zlib`, `:gzip`, `:zstd`, `:lz4`, `:blosc`, `:bz2` (also
      `:bzip2`), `:lzma`, `:crc32c`, `:shuffle`, `:delta`, … — the numcodecs
      id, with `_` for `-` (`:vlen_utf8` is `"vlen-utf8"`);
    * `{atom, keyword}`: options, e.g. `{:zstd, level: 3}` or
      `{:blosc, cname: "zstd", clevel: 3, shuffle: :bitshuffle}`. Blosc's
      shuffle may be `:noshuffle`, `:shuffle`, `:bitshuffle` (0, 1, 2) or
      `:autoshuffle` (-1); a `dtype:`/`astype:` option may be an Elixir dtype;
    * a numcodecs config map with string keys: `%{"id" => "zlib", "level" => 6}`.

  Options left out take numcodecs' defaults (for example `:zlib` is
  `Zlib(level=1)`).

  ## Options

  Every function accepts `server:` (the sidecar to use, default
  `ZarrBridge.Sidecar`) and `timeout:` (milliseconds, default: the
  sidecar's). Payloads larger than the sidecar's stream frame size
  (`stream_frame_bytes` in its `hello`, 256 KiB by default) are uploaded as
  a stream, or, from the sidecar's handoff threshold (4 MiB by default),
  written into a shared-memory file that the sidecar reads and removes;
  results of any size come back as one binary. The functions that take a
  payload or return many results also accept `handoff:` (`:auto` by
  default; see "Handoff" in `ZarrBridge.Sidecar`, the one meaning of the
  option): `false` keeps every byte on the pipe. Unknown options raise
  `ArgumentError`.

  ## Errors

  `{:error, %ZarrBridge.Error{}}` with, among others, `:codec_unavailable`
  (unknown id, or its package is missing), `:invalid_codec_config`,
  `:decode_failed`, `:encode_failed`, `:codec_forbidden` (pickle, unless the
  sidecar allows it), `:data_size_mismatch` and `:unsupported_dtype`.

  ## Examples

      iex> data = :binary.copy("zarr", 1000)
      iex> {:ok, packed} = ZarrBridge.Codecs.encode({:zstd, level: 3}, data)
      iex> byte_size(packed) < byte_size(data)
      true
      iex> ZarrBridge.Codecs.decode(:zstd, packed) == {:ok, data}
      true
      iex> ZarrBridge.Codecs.codec_available?(:blosc)
      {:ok, true}
  """

  alias ZarrBridge.{CodecSpec, Dtype, Error, Options, Sidecar}
  alias ZarrBridge.Codecs.Batch

  @typedoc "A codec: see the module doc."
  @type codec :: atom | String.t() | {atom, keyword} | %{optional(String.t()) => term}

  @typedoc "A description of one codec, from `list_codecs/1`."
  @type codec_info :: %{
          id: String.t(),
          name: atom,
          available: boolean,
          forbidden: boolean,
          reason: String.t() | nil,
          default_config: map | nil
        }

  @typedoc """
  One chunk's codec step: `zarr_format` (2 or 3, default 3), `dtype`, `shape`
  (the chunk's), and `filters` + `compressor` + `order` (v2) or `codecs`
  (v3: a list of v3 codec JSON maps with string keys).
  """
  @type pipeline_spec :: keyword | map

  @common [:server, :timeout]

  @doc """
  Lists every codec the sidecar knows, with whether it can be used.

  Each entry: `id` (the numcodecs id), `name` (its atom), `available`
  (importable), `forbidden` (it can run code on decode and the sidecar does
  not allow it), `reason` (why it is unavailable) and `default_config`.
  """
  @spec list_codecs(keyword) :: {:ok, [codec_info]} | {:error, Error.t()}
  def list_codecs(opts \\ []) do
    Options.check!(opts, @common)

    case call("codec.list", %{}, nil, opts) do
      {:ok, %{"codecs" => codecs}} when is_list(codecs) -> {:ok, Enum.map(codecs, &info/1)}
      {:ok, other} -> Options.unexpected(other)
      {:error, %Error{}} = error -> error
    end
  end

  @doc "Like `list_codecs/1`, but raises `ZarrBridge.Error`."
  @spec list_codecs!(keyword) :: [codec_info]
  def list_codecs!(opts \\ []), do: Options.bang(list_codecs(opts))

  @doc """
  The atoms of the codecs that can be used: available and not forbidden, in
  the sidecar's order. When `:bz2` is there, its alias `:bzip2` follows it
  (as ExZarr names it). The atoms come from the sidecar's codec registry (a
  bounded set).

      iex> {:ok, codecs} = ZarrBridge.Codecs.available_codecs()
      iex> :zlib in codecs and :bzip2 in codecs and :pickle not in codecs
      true
  """
  @spec available_codecs(keyword) :: {:ok, [atom]} | {:error, Error.t()}
  def available_codecs(opts \\ []) do
    with {:ok, codecs} <- list_codecs(opts) do
      {:ok,
       codecs
       |> Enum.filter(&usable?/1)
       |> Enum.flat_map(fn
         %{name: :bz2} -> [:bz2, :bzip2]
         %{name: name} -> [name]
       end)}
    end
  end

  @doc "Like `available_codecs/1`, but returns the list, or raises `ZarrBridge.Error`."
  @spec available_codecs!(keyword) :: [atom]
  def available_codecs!(opts \\ []), do: Options.bang(available_codecs(opts))

  @doc """
  Whether `codec` (an atom such as `:zstd` or `:bzip2`, or an id string) is
  available and allowed in the sidecar: `{:ok, boolean}`, or the error that
  kept the sidecar from answering.

      iex> ZarrBridge.Codecs.codec_available?(:zstd)
      {:ok, true}
      iex> ZarrBridge.Codecs.codec_available?(:pickle)
      {:ok, false}
  """
  @spec codec_available?(atom | String.t(), keyword) :: {:ok, boolean} | {:error, Error.t()}
  def codec_available?(codec, opts \\ []) when is_atom(codec) or is_binary(codec) do
    id = CodecSpec.id(codec)

    with {:ok, codecs} <- list_codecs(opts) do
      {:ok, Enum.any?(codecs, &(&1.id == id and usable?(&1)))}
    end
  end

  defp usable?(info), do: info.available and not info.forbidden

  @doc """
  Encodes `data` with `codec`.

  Options: `dtype:` views the input as that dtype first (filters such as
  `:delta` and `:quantize` need it), `server:`, `timeout:`.

  Codecs that take variable-length elements (`:vlen_utf8`, `:vlen_bytes`,
  `:json2`, …) are given `{:values, list}`: strings as binaries, raw bytes
  as `{:bin, binary}`.

      {:ok, packed} = ZarrBridge.Codecs.encode(:vlen_utf8, {:values, ["a", "bc"]})
  """
  @spec encode(codec, iodata | {:values, list}, keyword) :: {:ok, binary} | {:error, Error.t()}
  def encode(codec, data, opts \\ []) do
    Options.check!(opts, [:dtype, :handoff | @common])

    with {:ok, params} <- codec_params(codec, opts) do
      "codec.encode" |> call(params, data, opts) |> data_result()
    end
  end

  @doc "Like `encode/3`, but raises `ZarrBridge.Error`."
  @spec encode!(codec, iodata | {:values, list}, keyword) :: binary
  def encode!(codec, data, opts \\ []), do: Options.bang(encode(codec, data, opts))

  @doc """
  Decodes `data` with `codec`.

  Options: `dtype:` and `shape:` (a tuple) make the result the decoded
  array's raw bytes, little-endian and C-order (`:data_size_mismatch` when
  the decoded size does not fit); `server:`, `timeout:`.

  A codec whose output is variable-length elements (`:vlen_utf8`,
  `:vlen_bytes`, `:json2`, …) gives a list: `{:ok, ["a", "bc"]}`.
  """
  @spec decode(codec, iodata, keyword) :: {:ok, binary | list} | {:error, Error.t()}
  def decode(codec, data, opts \\ []) do
    Options.check!(opts, [:dtype, :shape, :handoff | @common])

    with {:ok, params} <- codec_params(codec, opts) do
      "codec.decode" |> call(params, data, opts) |> data_result()
    end
  end

  @doc "Like `decode/3`, but raises `ZarrBridge.Error`."
  @spec decode!(codec, iodata, keyword) :: binary | list
  def decode!(codec, data, opts \\ []), do: Options.bang(decode(codec, data, opts))

  @doc """
  Encodes each binary of `items` with `codec`, spread over the sidecar's
  workers; the results are in input order. Options as for `encode/3`, and
  `handoff:` as for `decode_many/3` (here it is about how the items travel).

  A batch may be of any total size up to the sidecar's `max_request_bytes`
  (16 GiB by default): items too big for one request frame (the sidecar's
  `max_frame_bytes`, 64 MiB by default) are uploaded back to back, and
  results too big for one frame come back as a stream. A bigger batch fails
  with `:too_large`, before anything is sent.
  """
  @spec encode_many(codec, [binary], keyword) :: {:ok, [binary]} | {:error, Error.t()}
  def encode_many(codec, items, opts \\ []) when is_list(items) do
    Options.check!(opts, [:dtype, :handoff | @common])
    {upload_handoff, opts} = batch_handoff(opts)
    many("codec.encode_many", codec, items, opts, false, upload_handoff)
  end

  @doc "Like `encode_many/3`, but raises `ZarrBridge.Error`."
  @spec encode_many!(codec, [binary], keyword) :: [binary]
  def encode_many!(codec, items, opts \\ []), do: Options.bang(encode_many(codec, items, opts))

  @doc """
  Decodes each binary of `items` with `codec`, spread over the sidecar's
  workers; the results are in input order. Options as for `decode/3`, and:

    * `handoff:` - `:auto` (the default) or `true` lets the sidecar hand large results
      (its `handoff_threshold` or more in all, 4 MiB by default) over through one
      shared-memory file instead of the pipe, and large batches of items
      travel to it the same way; the results are then sub-binaries of one
      binary that this call reads (keeping one of them keeps that whole
      binary alive: `:binary.copy/1` an item you keep alone). `false`
      always uses the pipe (results too big for one frame come as a stream).

  A batch may be of any total size up to the sidecar's `max_request_bytes`
  (16 GiB by default): items too big for one request frame (the sidecar's
  `max_frame_bytes`, 64 MiB by default) are uploaded back to back. A bigger
  batch fails with `:too_large`, before anything is sent.
  """
  @spec decode_many(codec, [binary], keyword) :: {:ok, [binary | list]} | {:error, Error.t()}
  def decode_many(codec, items, opts \\ []) when is_list(items) do
    Options.check!(opts, [:dtype, :shape, :handoff | @common])
    {upload_handoff, opts} = batch_handoff(opts)
    many("codec.decode_many", codec, items, opts, upload_handoff != false, upload_handoff)
  end

  defp batch_handoff(opts) do
    {handoff, opts} = Keyword.pop(opts, :handoff, :auto)
    {handoff!(handoff), opts}
  end

  defp handoff!(handoff) when is_boolean(handoff) or handoff == :auto, do: handoff

  defp handoff!(other),
    do: raise(ArgumentError, "handoff must be a boolean or :auto, got: #{inspect(other)}")

  @doc "Like `decode_many/3`, but raises `ZarrBridge.Error`."
  @spec decode_many!(codec, [binary], keyword) :: [binary | list]
  def decode_many!(codec, items, opts \\ []), do: Options.bang(decode_many(codec, items, opts))

  @doc """
  Runs the encode side of one chunk's codec pipeline: `data` is the chunk as
  raw little-endian C-order bytes; the result is what a Zarr store holds.

      ZarrBridge.Codecs.pipeline_encode(
        [zarr_format: 2, dtype: :int32, shape: {100}, filters: [:shuffle], compressor: :zlib],
        chunk_bytes
      )

      ZarrBridge.Codecs.pipeline_encode(
        %{zarr_format: 3, dtype: :float64, shape: {10, 10},
          codecs: [%{"name" => "bytes", "configuration" => %{"endian" => "little"}},
                   %{"name" => "zstd", "configuration" => %{"level" => 3}}]},
        chunk_bytes
      )

  In a v2 spec `filters` and `compressor` take the codec forms of this module
  (`nil` for none; a missing `compressor` means none), and a `:shuffle`
  or `:delta` filter gets its element size or dtype from `dtype`.
  Options: `server:`, `timeout:`.
  """
  @spec pipeline_encode(pipeline_spec, iodata, keyword) :: {:ok, binary} | {:error, Error.t()}
  def pipeline_encode(spec, data, opts \\ []),
    do: pipeline("codec.pipeline_encode", spec, data, opts)

  @doc "Like `pipeline_encode/3`, but raises `ZarrBridge.Error`."
  @spec pipeline_encode!(pipeline_spec, iodata, keyword) :: binary
  def pipeline_encode!(spec, data, opts \\ []),
    do: Options.bang(pipeline_encode(spec, data, opts))

  @doc """
  Runs the decode side of one chunk's codec pipeline: `data` is a stored
  chunk; the result is the chunk as raw little-endian C-order bytes. The
  spec is as for `pipeline_encode/3`.
  """
  @spec pipeline_decode(pipeline_spec, iodata, keyword) :: {:ok, binary} | {:error, Error.t()}
  def pipeline_decode(spec, data, opts \\ []),
    do: pipeline("codec.pipeline_decode", spec, data, opts)

  @doc "Like `pipeline_decode/3`, but raises `ZarrBridge.Error`."
  @spec pipeline_decode!(pipeline_spec, iodata, keyword) :: binary
  def pipeline_decode!(spec, data, opts \\ []),
    do: Options.bang(pipeline_decode(spec, data, opts))

  # ------------------------------------------------------------------

  defp info(%{"id" => id} = entry) do
    %{
      id: id,
      name: CodecSpec.id_to_atom(id),
      available: Map.get(entry, "available") == true,
      forbidden: Map.get(entry, "forbidden") == true,
      reason: Map.get(entry, "reason"),
      default_config: Map.get(entry, "default_config")
    }
  end

  defp many(method, codec, items, opts, handoff, upload_handoff) do
    with {:ok, params} <- codec_params(codec, opts),
         do: Batch.run(method, params, items, opts, handoff, upload_handoff)
  end

  defp codec_params(codec, opts) do
    with {:ok, config} <- CodecSpec.to_config(codec),
         {:ok, params} <- put_dtype(%{"codec" => config}, opts[:dtype]) do
      {:ok, put_shape(params, opts[:shape])}
    end
  end

  defp put_dtype(params, nil), do: {:ok, params}

  defp put_dtype(params, dtype) do
    with {:ok, dtype} <- Dtype.normalize(dtype), {:ok, wire} <- Dtype.to_wire(dtype) do
      {:ok, Map.put(params, "dtype", wire)}
    end
  end

  defp put_shape(params, nil), do: params

  defp put_shape(params, shape) when is_tuple(shape),
    do: Map.put(params, "shape", Tuple.to_list(shape))

  defp put_shape(params, shape) when is_list(shape), do: Map.put(params, "shape", shape)

  defp put_shape(_params, shape),
    do: raise(ArgumentError, "shape must be a tuple, got: #{inspect(shape)}")

  @spec_keys [:zarr_format, :dtype, :shape, :filters, :compressor, :order, :codecs]

  defp pipeline(method, spec, data, opts) do
    Options.check!(opts, [:handoff | @common])
    spec = spec_to_keyword(spec)

    with {:ok, params} <- pipeline_params(spec) do
      method |> call(params, data, opts) |> data_result()
    end
  end

  defp spec_to_keyword(spec) when is_map(spec) do
    Enum.map(spec, fn
      {key, value} when is_atom(key) -> {key, value}
      {key, value} when is_binary(key) -> {spec_key(key), value}
    end)
  end

  defp spec_to_keyword(spec) when is_list(spec), do: spec

  defp spec_key(key) do
    Enum.find(@spec_keys, &(Atom.to_string(&1) == key)) ||
      raise ArgumentError, "unknown pipeline spec key #{inspect(key)}"
  end

  defp pipeline_params(spec) do
    Options.check!(spec, @spec_keys, "pipeline spec")
    format = Keyword.get(spec, :zarr_format, 3)
    dtype = Keyword.get(spec, :dtype) || raise ArgumentError, "a pipeline spec needs :dtype"
    shape = Keyword.get(spec, :shape) || raise ArgumentError, "a pipeline spec needs :shape"

    with {:ok, dtype} <- Dtype.normalize(dtype),
         {:ok, wire} <- Dtype.to_wire(dtype),
         base = put_shape(%{"zarr_format" => format, "dtype" => wire}, shape),
         {:ok, rest} <- pipeline_codecs(format, dtype, spec) do
      {:ok, Map.merge(base, rest)}
    end
  end

  defp pipeline_codecs(2, dtype, spec) do
    with {:ok, filters} <- CodecSpec.to_configs(Keyword.get(spec, :filters)),
         {:ok, compressor} <- CodecSpec.to_config_or_nil(Keyword.get(spec, :compressor)) do
      {:ok,
       %{
         "filters" => filters && Enum.map(filters, &CodecSpec.with_dtype(&1, dtype)),
         "compressor" => compressor,
         "order" => order(Keyword.get(spec, :order, "C"))
       }}
    end
  end

  defp pipeline_codecs(3, _dtype, spec) do
    if Keyword.has_key?(spec, :filters) or Keyword.has_key?(spec, :compressor) do
      raise ArgumentError,
            "a zarr_format 3 pipeline spec takes :codecs, not :filters or :compressor"
    end

    case Keyword.fetch(spec, :codecs) do
      {:ok, codecs} when is_list(codecs) ->
        {:ok, %{"codecs" => codecs}}

      _ ->
        raise ArgumentError,
              "a zarr_format 3 pipeline spec needs :codecs (a list of v3 codec maps)"
    end
  end

  defp pipeline_codecs(other, _dtype, _spec),
    do: raise(ArgumentError, "zarr_format must be 2 or 3, got: #{inspect(other)}")

  defp order(order) when order in ["C", "F"], do: order
  defp order(order) when order in [:c, :C], do: "C"
  defp order(order) when order in [:f, :F], do: "F"

  defp order(order),
    do: raise(ArgumentError, ~s(order must be "C" or "F", got: #{inspect(order)}))

  defp call(method, params, data, opts) do
    server = Options.server(opts)
    call_opts = Options.call_opts(opts)

    cond do
      data == nil ->
        Sidecar.call(server, method, params, call_opts)

      match?({:values, list} when is_list(list), data) ->
        Sidecar.call(server, method, Map.put(params, "values", elem(data, 1)), call_opts)

      true ->
        handoff = handoff!(Keyword.get(opts, :handoff, :auto))
        Sidecar.call(server, method, params, [data: data, handoff: handoff] ++ call_opts)
    end
  end

  defp data_result({:ok, %{"data" => {:bin, out}}}), do: {:ok, out}

  # Codecs that yield variable-length elements (vlen-utf8, json2, ...) answer
  # with "values", a list.
  defp data_result({:ok, %{"values" => values}}) when is_list(values),
    do: {:ok, Enum.map(values, &Options.plain/1)}

  defp data_result({:ok, other}), do: Options.unexpected(other)
  defp data_result({:error, %Error{}} = error), do: error
end
