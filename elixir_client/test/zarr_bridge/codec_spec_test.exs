defmodule ZarrBridge.CodecSpecTest do
  use ExUnit.Case, async: true

  alias ZarrBridge.{CodecSpec, Error}

  describe "to_config/1" do
    test "an atom is its id, with numcodecs' defaults left to numcodecs" do
      for {atom, id} <- [
            zlib: "zlib",
            gzip: "gzip",
            zstd: "zstd",
            lz4: "lz4",
            blosc: "blosc",
            bz2: "bz2",
            bzip2: "bz2",
            lzma: "lzma",
            crc32c: "crc32c",
            shuffle: "shuffle",
            vlen_utf8: "vlen-utf8",
            vlen_bytes: "vlen-bytes",
            jenkins_lookup3: "jenkins_lookup3"
          ] do
        assert CodecSpec.to_config(atom) == {:ok, %{"id" => id}}
      end
    end

    test "an id string is taken as it is" do
      assert CodecSpec.to_config("vlen-utf8") == {:ok, %{"id" => "vlen-utf8"}}
    end

    test "{atom, keyword} gives string keys" do
      assert CodecSpec.to_config({:zstd, level: 3}) == {:ok, %{"id" => "zstd", "level" => 3}}

      assert CodecSpec.to_config({:bzip2, level: 9}) == {:ok, %{"id" => "bz2", "level" => 9}}
    end

    test "blosc's shuffle atoms become numbers; other atoms become strings" do
      for {atom, n} <- [noshuffle: 0, shuffle: 1, bitshuffle: 2, autoshuffle: -1] do
        assert {:ok, %{"shuffle" => ^n}} = CodecSpec.to_config({:blosc, shuffle: atom})
      end

      assert CodecSpec.to_config({:blosc, cname: :zstd, clevel: 3, shuffle: :bitshuffle}) ==
               {:ok, %{"id" => "blosc", "cname" => "zstd", "clevel" => 3, "shuffle" => 2}}

      assert {:ok, %{"shuffle" => 1}} = CodecSpec.to_config({:blosc, shuffle: 1})

      assert {:error, %Error{code: :invalid_codec_config, details: %{key: "shuffle"}}} =
               CodecSpec.to_config({:blosc, shuffle: :sideways})
    end

    test "dtype options take Elixir dtypes" do
      assert CodecSpec.to_config({:delta, dtype: :int32}) ==
               {:ok, %{"id" => "delta", "dtype" => "int32"}}

      assert CodecSpec.to_config({:delta, dtype: "<i4", astype: :int16}) ==
               {:ok, %{"id" => "delta", "dtype" => "<i4", "astype" => "int16"}}

      assert {:error, %Error{code: :invalid_codec_config, details: %{key: "dtype"}}} =
               CodecSpec.to_config({:delta, dtype: :int99})
    end

    test "config maps: string keys kept, atom keys converted, an id required" do
      config = %{"id" => "blosc", "cname" => "lz4", "clevel" => 5, "shuffle" => 1}
      assert CodecSpec.to_config(config) == {:ok, config}

      assert CodecSpec.to_config(%{id: "zlib", level: 6}) ==
               {:ok, %{"id" => "zlib", "level" => 6}}

      assert CodecSpec.to_config(%{"id" => :bzip2}) == {:ok, %{"id" => "bz2"}}

      assert CodecSpec.to_config({:zlib, %{"level" => 2}}) ==
               {:ok, %{"id" => "zlib", "level" => 2}}

      for bad <- [%{"level" => 1}, %{"id" => ""}, %{"id" => 5}, %{1 => 2, "id" => "zlib"}] do
        assert {:error, %Error{code: :invalid_codec_config}} = CodecSpec.to_config(bad)
      end
    end

    test "anything else is an invalid_codec_config error" do
      for bad <- [nil, true, 42, "", {:zlib, [1, 2]}, {:zlib, :level}, {1, []}, [:zlib]] do
        assert {:error, %Error{code: :invalid_codec_config}} = CodecSpec.to_config(bad),
               inspect(bad)
      end
    end
  end

  test "to_config_or_nil/1 and to_configs/1" do
    assert CodecSpec.to_config_or_nil(nil) == {:ok, nil}
    assert CodecSpec.to_config_or_nil(:lz4) == {:ok, %{"id" => "lz4"}}
    assert CodecSpec.to_configs(nil) == {:ok, nil}
    assert CodecSpec.to_configs([]) == {:ok, []}

    assert CodecSpec.to_configs([:shuffle, {:delta, dtype: :int32}]) ==
             {:ok, [%{"id" => "shuffle"}, %{"id" => "delta", "dtype" => "int32"}]}

    assert {:error, %Error{code: :invalid_codec_config}} = CodecSpec.to_configs([:shuffle, 5])
    assert {:error, %Error{code: :invalid_codec_config}} = CodecSpec.to_configs(:shuffle)
  end

  test "with_dtype/2 fills what the array's dtype implies, keeping given keys" do
    assert CodecSpec.with_dtype(%{"id" => "shuffle"}, :float64) ==
             %{"id" => "shuffle", "elementsize" => 8}

    assert CodecSpec.with_dtype(%{"id" => "shuffle", "elementsize" => 2}, :float64) ==
             %{"id" => "shuffle", "elementsize" => 2}

    assert CodecSpec.with_dtype(%{"id" => "delta"}, :int16) == %{
             "id" => "delta",
             "dtype" => "int16"
           }

    assert CodecSpec.with_dtype(%{"id" => "quantize", "digits" => 2}, :float32) ==
             %{"id" => "quantize", "digits" => 2, "dtype" => "float32"}

    assert CodecSpec.with_dtype(%{"id" => "zlib"}, :int16) == %{"id" => "zlib"}
    assert CodecSpec.with_dtype(%{"id" => "shuffle"}, :string) == %{"id" => "shuffle"}
  end

  test "from_config/1 gives {atom, keyword sorted by key}" do
    assert CodecSpec.from_config(%{"id" => "zlib", "level" => 5}) == {:zlib, [level: 5]}

    assert CodecSpec.from_config(%{
             "id" => "blosc",
             "cname" => "zstd",
             "clevel" => 3,
             "shuffle" => 1,
             "blocksize" => 0
           }) == {:blosc, [blocksize: 0, clevel: 3, cname: "zstd", shuffle: 1]}

    assert CodecSpec.from_config(%{"id" => "vlen-utf8"}) == {:vlen_utf8, []}
    assert CodecSpec.from_config(%{"id" => "numcodecs.zlib", "level" => 1}) == {:zlib, [level: 1]}
  end

  test "id/1 and id_to_atom/1 are inverse for every numcodecs id" do
    for id <- ~w(adler32 astype base64 bitround blosc bz2 categorize crc32 crc32c delta
                 fixedscaleoffset fletcher32 gzip jenkins_lookup3 json2 lz4 lzma msgpack2
                 packbits pcodec pickle quantize shuffle vlen-array vlen-bytes vlen-utf8 zfpy
                 zlib zstd) do
      assert id |> CodecSpec.id_to_atom() |> CodecSpec.id() == id
    end
  end
end
